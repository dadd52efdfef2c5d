//! The MariaDB layer under the DB action files: replication (configure a master, replicate
//! from it, find a cluster's master, point its DNS record), topology (slave states, evidence of
//! a dead master, the slave to promote, repointing, fencing) over GTID positions (`gtid`), the promote itself (`promote`), backup (one file per strategy),
//! restore (resolve a backup, restore its data and give the server its role) and compression. Calls only downward (`mycnf`,
//! `transfer`, `mysql`, `ssh`, `s3`).

pub mod backup;
pub mod compression;
pub mod gtid;
pub mod promote;
pub mod replication;
pub mod restore;
pub mod seed;
pub mod server;
pub mod topology;
