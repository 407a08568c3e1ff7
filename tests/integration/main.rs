//! Integration tests: each runs the real `cwbackup` binary on real files, the way an operator
//! would, one module per operation (as in src/ops/).

pub mod api;
mod backup;
mod common;
mod contract;
mod copy;
mod crash;
mod docker;
mod encryption;
pub mod disk_full;
mod faultproxy;
mod faults;
mod hostile;
mod human;
mod import;
mod installation;
mod list;
mod prune;
mod restore;
mod s3;
mod swapped;
mod verify;
mod volumes;
mod weed;
