// Single-node replica set for images-service (change streams need a replica set).
//
// docker-compose.yml runs this file as the mongo service's healthcheck:
//   mongosh --quiet --norc /scripts/mongo-init-replica.js
// It is idempotent: the first run initiates the set, later runs only check it. The exit
// status is the health: 0 once this node is a writable primary, 1 otherwise (still
// electing, or a real error, which is printed). It is deliberately NOT mounted into
// /docker-entrypoint-initdb.d: the image runs those scripts against a temporary mongod
// started without --replSet, where rs.initiate() fails and aborts the first start.
//
// MONGO_REPLICA_SET (default rs0) must match mongod's --replSet; MONGO_REPLICA_HOST
// (default mongo:27017) is the member address every client will be sent to, so it must be
// the name the other containers resolve (the compose service name).
const replicaSet = process.env.MONGO_REPLICA_SET || "rs0";
const memberHost = process.env.MONGO_REPLICA_HOST || "mongo:27017";

const NOT_YET_INITIALIZED = 94; // rs.status() before rs.initiate()
const ALREADY_INITIALIZED = 23; // a concurrent run initiated it first

function initiateIfNeeded() {
  try {
    rs.status();
    return "initialized";
  } catch (e) {
    if (e.code !== NOT_YET_INITIALIZED && e.codeName !== "NotYetInitialized") {
      throw e;
    }
  }
  try {
    rs.initiate({ _id: replicaSet, members: [{ _id: 0, host: memberHost }] });
    print(`images-service: initiated replica set ${replicaSet} with member ${memberHost}`);
    return "initiated";
  } catch (e) {
    if (e.code === ALREADY_INITIALIZED || e.codeName === "AlreadyInitialized") {
      return "initialized";
    }
    throw e;
  }
}

// quit() is called once, outside try/catch: in mongosh it may unwind by throwing.
let exitCode = 1;
try {
  initiateIfNeeded();
  const hello = db.hello();
  if (hello.setName !== replicaSet) {
    print(`images-service: replica set is ${hello.setName}, expected ${replicaSet}`);
  } else {
    exitCode = hello.isWritablePrimary ? 0 : 1;
  }
} catch (e) {
  print(`images-service: replica set check failed: ${e.message || e}`);
}
quit(exitCode);
