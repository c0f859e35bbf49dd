"""The dev stack and what it embeds: stack (the `images-service dev` command), embedded servers
(nx-27017, Redis), SeaweedFS (embedded_s3) and the dev bucket (bucket)."""
