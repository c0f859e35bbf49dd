"""Jobs: the store in MongoDB, exactly-once progress in Redis, triggers, filters, projections
and the `_id` order used to resume scans."""
