// Initiates the single-node replica set `rs0` (change streams need a replica set).
// Run by the mongo service's healthcheck: idempotent, answers 1 once a primary exists.
try {
  rs.status().ok;
} catch (e) {
  rs.initiate({ _id: "rs0", members: [{ _id: 0, host: "mongo:27017" }] });
}
db.hello().isWritablePrimary ? 1 : 0;
