//! The Docker Engine, through its API: resolve a named volume to its mountpoint, find a
//! compose project's volumes and containers by the compose labels, stop and start containers,
//! create volumes with labels.
//!
//! A small blocking facade over `bollard` (an async client): one current-thread tokio runtime
//! for the whole process drives every request, so callers stay plain blocking code. The engine
//! is reached at `DOCKER_HOST` (`unix://…` or `tcp://…`), else at `/var/run/docker.sock`; the
//! API version is negotiated on connect, so an older engine (20.10 speaks 1.41) is understood.
//!
//! Errors: an engine that cannot be reached is `docker_error` with a hint (is the daemon
//! running, may this user open the socket), never "volume not found"; a volume the engine
//! does not have is `volume_not_found`.
//!
//! This module uses only the leaves and the wire formats (`crate::error`); the operations join
//! it with the volume code.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerSummaryStateEnum, VolumeCreateRequest};
use bollard::query_parameters::{
    ListContainersOptions, ListVolumesOptions, StartContainerOptions, StopContainerOptions,
};

use crate::error::{Error, ErrorKind, Result};

/// The label compose puts on every object of a project: the project's name.
pub const PROJECT_LABEL: &str = "com.docker.compose.project";
/// The label compose puts on a project's volume: its short name (`service-manager`).
pub const VOLUME_LABEL: &str = "com.docker.compose.volume";
/// The label compose puts on a project's container: its service.
pub const SERVICE_LABEL: &str = "com.docker.compose.service";

/// The label compose puts on a `docker compose run` container: `True`.
pub const ONEOFF_LABEL: &str = "com.docker.compose.oneoff";

/// Where the engine listens unless `DOCKER_HOST` says otherwise.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// The longest wait for an ordinary request (inspect, list, create, start).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A Docker volume as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    /// The volume's full name (`connectware_service-manager`).
    pub name: String,
    /// Where its data lives on this host (`/var/lib/docker/volumes/<name>/_data`).
    pub mountpoint: PathBuf,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

impl VolumeInfo {
    /// Its compose short name (label `com.docker.compose.volume`), if it has a non-empty one.
    pub fn compose_name(&self) -> Option<&str> {
        self.labels
            .get(VOLUME_LABEL)
            .map(String::as_str)
            .filter(|n| !n.is_empty())
    }

    /// Its compose project (label `com.docker.compose.project`), if it has a non-empty one.
    pub fn project(&self) -> Option<&str> {
        self.labels
            .get(PROJECT_LABEL)
            .map(String::as_str)
            .filter(|n| !n.is_empty())
    }
}

/// A container as the engine lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Its full id.
    pub id: String,
    /// Its name, without the leading `/`.
    pub name: String,
    /// Whether it is running (a paused or restarting container counts as running: it holds
    /// its volumes).
    pub running: bool,
    /// Its compose service (label `com.docker.compose.service`).
    pub service: Option<String>,
    /// A one-off container of `docker compose run` (label `com.docker.compose.oneoff=True`).
    pub oneoff: bool,
}

/// A connection to the Docker Engine.
#[derive(Debug, Clone)]
pub struct Engine {
    docker: Docker,
    /// Where the engine was reached, for messages (`unix:///var/run/docker.sock`).
    host: String,
}

/// The one runtime that drives every request of the process (bollard is async; the rest of
/// cwbackup is blocking). A current-thread runtime: requests are driven by the thread that
/// waits for them, and threads that wait at once take turns.
fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> =
        OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| {
            Error::new(
                ErrorKind::DockerError,
                format!("cannot start the runtime that talks to the Docker engine: {e}"),
            )
        })
}

/// Runs one request to completion on the runtime.
fn block_on<F: Future>(future: F) -> Result<F::Output> {
    Ok(runtime()?.block_on(future))
}

/// Where the engine is: `DOCKER_HOST`, else the default socket.
fn docker_host() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| DEFAULT_HOST.to_string())
}

/// A client error with its causes (`client error (Connect): Connection refused (os error
/// 111)`): the outermost alone rarely says what went wrong.
fn describe(e: &BollardError) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}

/// The hint for an engine that cannot be reached.
fn unreachable_hint(host: &str) -> String {
    if !host.starts_with("unix://") && !host.starts_with("tcp://") && !host.starts_with("http://") {
        return format!(
            "DOCKER_HOST must be unix://SOCKET or tcp://HOST:PORT (TLS and ssh:// are not supported); unset it to use {DEFAULT_HOST}"
        );
    }
    match host.strip_prefix("unix://") {
        Some(socket) => format!(
            "is the Docker daemon running (`systemctl status docker`), and may this user open {socket} (root, or a member of the `docker` group)? Set DOCKER_HOST to reach another engine"
        ),
        None => format!(
            "is the Docker daemon running and listening at {host}? DOCKER_HOST names the engine; unset it to use /var/run/docker.sock"
        ),
    }
}

/// Whether a failure means that the engine could not be reached at all (as opposed to an
/// answer the engine gave).
fn is_unreachable(e: &BollardError) -> bool {
    matches!(
        e,
        BollardError::SocketNotFoundError(_)
            | BollardError::HyperLegacyError { .. }
            | BollardError::IOError { .. }
            | BollardError::RequestTimeoutError
            | BollardError::UnsupportedURISchemeError { .. }
    )
}

impl Engine {
    /// Connects to the engine at `DOCKER_HOST` (`unix://` or `tcp://`), else at
    /// `/var/run/docker.sock`, and agrees on the API version with it. An engine that cannot be
    /// reached is `docker_error` with a hint.
    pub fn connect() -> Result<Engine> {
        let host = docker_host();
        let unreachable = |e: BollardError| {
            Error::new(
                ErrorKind::DockerError,
                format!(
                    "cannot reach the Docker engine at {host}: {}; {}",
                    describe(&e),
                    unreachable_hint(&host)
                ),
            )
            .detail("docker_host", &host)
        };
        let docker = Docker::connect_with_host(&host).map_err(unreachable)?;
        let docker = block_on(docker.with_timeout(REQUEST_TIMEOUT).negotiate_version())?
            .map_err(unreachable)?;
        Ok(Engine { docker, host })
    }

    /// Where the engine was reached (`unix:///var/run/docker.sock`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// A failure of a request `what` (`inspect volume x`): `docker_error`, with the
    /// unreachable hint when the engine went away.
    fn failed(&self, what: &str, e: BollardError) -> Error {
        let message = if is_unreachable(&e) {
            format!(
                "cannot reach the Docker engine at {} to {what}: {}; {}",
                self.host,
                describe(&e),
                unreachable_hint(&self.host)
            )
        } else {
            format!(
                "the Docker engine at {} failed to {what}: {}",
                self.host,
                describe(&e)
            )
        };
        Error::new(ErrorKind::DockerError, message).detail("docker_host", &self.host)
    }

    /// A named volume: its mountpoint and labels. A volume the engine lacks is
    /// `volume_not_found`.
    pub fn volume(&self, name: &str) -> Result<VolumeInfo> {
        if !valid_name(name) {
            return Err(Error::new(
                ErrorKind::VolumeNotFound,
                format!(
                    "`{name}` is not a Docker volume name (letters, digits and `_.-`, starting with a letter or digit): check the name with `docker volume ls` (the default is connectware_service-manager)"
                ),
            )
            .detail("docker_volume", name));
        }
        let volume = match block_on(self.docker.inspect_volume(name))? {
            Ok(v) => v,
            Err(BollardError::DockerResponseServerError {
                status_code: 404,
                message,
            }) => {
                return Err(Error::new(
                    ErrorKind::VolumeNotFound,
                    format!(
                        "Docker volume {name} not found ({}): check the name with `docker volume ls` (the default is connectware_service-manager)",
                        message.trim()
                    ),
                )
                .detail("docker_volume", name));
            }
            Err(e) => return Err(self.failed(&format!("inspect volume {name}"), e)),
        };
        volume_info(volume.name, volume.mountpoint, volume.labels)
    }

    /// The volumes of a compose project (label `com.docker.compose.project=<project>`), sorted
    /// by name. A project without volumes is `volume_not_found`, naming the projects the
    /// engine has.
    pub fn project_volumes(&self, project: &str) -> Result<Vec<VolumeInfo>> {
        let mut volumes = self.volumes(Some(&format!("{PROJECT_LABEL}={project}")))?;
        // The engine filters; check again, so that a label filter the engine would read
        // differently (an `=` in the project name) never lets another project's volume in.
        volumes.retain(|v| v.project() == Some(project));
        if volumes.is_empty() {
            let projects: BTreeSet<String> = self
                .volumes(Some(PROJECT_LABEL))?
                .iter()
                .filter_map(|v| v.project().map(str::to_string))
                .collect();
            let known = if projects.is_empty() {
                "the engine has no volume of any compose project".to_string()
            } else {
                format!(
                    "the engine's compose projects are: {}",
                    projects.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            };
            return Err(Error::new(
                ErrorKind::VolumeNotFound,
                format!(
                    "no Docker volume belongs to the compose project `{project}` (label {PROJECT_LABEL}={project}): {known}; check `compose_project` (`docker volume ls --filter label={PROJECT_LABEL}`)"
                ),
            )
            .detail("compose_project", project)
            .detail("projects", projects));
        }
        volumes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(volumes)
    }

    /// The engine's volumes, those with `label` (`key` or `key=value`) if given.
    fn volumes(&self, label: Option<&str>) -> Result<Vec<VolumeInfo>> {
        let options = ListVolumesOptions {
            filters: label.map(|l| HashMap::from([("label".to_string(), vec![l.to_string()])])),
        };
        let list = block_on(self.docker.list_volumes(Some(options)))?
            .map_err(|e| self.failed("list volumes", e))?;
        list.volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| volume_info(v.name, v.mountpoint, v.labels))
            .collect()
    }

    /// The containers of a compose project (label `com.docker.compose.project=<project>`),
    /// running or not, sorted by name; empty if it has none.
    pub fn project_containers(&self, project: &str) -> Result<Vec<ContainerInfo>> {
        let label = format!("{PROJECT_LABEL}={project}");
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_string(), vec![label])])),
            ..Default::default()
        };
        let list = block_on(self.docker.list_containers(Some(options)))?
            .map_err(|e| self.failed(&format!("list the containers of project {project}"), e))?;
        let mut containers: Vec<ContainerInfo> = list
            .into_iter()
            .filter(|c| {
                c.labels
                    .as_ref()
                    .and_then(|l| l.get(PROJECT_LABEL))
                    .is_some_and(|p| p == project)
            })
            .filter_map(|c| {
                let id = c.id?;
                let name = c
                    .names
                    .as_ref()
                    .and_then(|n| n.first())
                    .map_or_else(|| id.clone(), |n| n.trim_start_matches('/').to_string());
                Some(ContainerInfo {
                    running: matches!(
                        c.state,
                        Some(
                            ContainerSummaryStateEnum::RUNNING
                                | ContainerSummaryStateEnum::PAUSED
                                | ContainerSummaryStateEnum::RESTARTING
                        )
                    ),
                    oneoff: c
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(ONEOFF_LABEL))
                        .is_some_and(|v| v.eq_ignore_ascii_case("true")),
                    service: c.labels.and_then(|mut l| l.remove(SERVICE_LABEL)),
                    id,
                    name,
                })
            })
            .collect();
        containers.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(containers)
    }

    /// Stops a container (by id or name): SIGTERM, then SIGKILL after `timeout_s` seconds, as
    /// `docker stop -t`. Stopping a stopped container is no error.
    pub fn stop(&self, id: &str, timeout_s: u64) -> Result<()> {
        self.check_container(id)?;
        let t = i32::try_from(timeout_s).unwrap_or(i32::MAX);
        let options = StopContainerOptions {
            t: Some(t),
            signal: None,
        };
        // The engine answers once the container is down: wait for the timeout and a margin.
        let docker = self
            .docker
            .clone()
            .with_timeout(REQUEST_TIMEOUT + Duration::from_secs(timeout_s));
        block_on(docker.stop_container(id, Some(options)))?
            .map_err(|e| self.failed(&format!("stop container {id}"), e))
    }

    /// Whether a container (by id or name) exists, and if so its state: (running, exit code
    /// of its last run). A stopped container's exit code 137 means SIGKILL: `docker stop`
    /// killed it when it did not stop within its timeout.
    pub fn state(&self, id: &str) -> Result<Option<(bool, Option<i64>)>> {
        self.check_container(id)?;
        match block_on(self.docker.inspect_container(id, None))? {
            Ok(c) => Ok(Some(c.state.map_or((false, None), |s| {
                (s.running.unwrap_or(false), s.exit_code)
            }))),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(self.failed(&format!("inspect container {id}"), e)),
        }
    }

    /// Starts a container (by id or name). Starting a running container is no error.
    pub fn start(&self, id: &str) -> Result<()> {
        self.check_container(id)?;
        block_on(
            self.docker
                .start_container(id, None::<StartContainerOptions>),
        )?
        .map_err(|e| self.failed(&format!("start container {id}"), e))
    }

    /// Creates a named volume (local driver) with `labels`, and returns it as the engine
    /// reports it. The engine returns an existing volume of that name as it is (its labels
    /// unchanged): callers create only what they found missing.
    pub fn create_volume(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<VolumeInfo> {
        if !valid_name(name) {
            return Err(Error::new(
                ErrorKind::DockerError,
                format!(
                    "cannot create Docker volume `{name}`: not a volume name (letters, digits and `_.-`, starting with a letter or digit)"
                ),
            ));
        }
        let request = VolumeCreateRequest {
            name: Some(name.to_string()),
            labels: Some(labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
            ..Default::default()
        };
        let volume = block_on(self.docker.create_volume(request))?
            .map_err(|e| self.failed(&format!("create volume {name}"), e))?;
        volume_info(volume.name, volume.mountpoint, volume.labels)
    }
}

impl Engine {
    /// Refuses what cannot be a container id or name before it goes into a request's path.
    fn check_container(&self, id: &str) -> Result<()> {
        if valid_name(id) {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::DockerError,
                format!("`{id}` is not a Docker container id or name"),
            ))
        }
    }
}

/// Whether `name` can name a Docker volume or container (the engine's own rule,
/// `[a-zA-Z0-9][a-zA-Z0-9_.-]+`); anything else is refused before it goes into a request's
/// path, where a `/` or `?` would address another endpoint.
fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.len() >= 2
        && bytes.len() <= 255
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(b))
}

/// A volume of the engine's answer; one without a mountpoint is `volume_not_found`.
fn volume_info(
    name: String,
    mountpoint: String,
    labels: HashMap<String, String>,
) -> Result<VolumeInfo> {
    if mountpoint.is_empty() {
        return Err(Error::new(
            ErrorKind::VolumeNotFound,
            format!("Docker reports no mountpoint for volume {name}: give `volume.path` instead"),
        )
        .detail("docker_volume", name));
    }
    Ok(VolumeInfo {
        name,
        mountpoint: PathBuf::from(mountpoint),
        labels: labels.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_names_the_daemon_and_the_socket_or_the_host() {
        let unix = unreachable_hint("unix:///var/run/docker.sock");
        assert!(unix.contains("daemon running"), "{unix}");
        assert!(unix.contains("/var/run/docker.sock"), "{unix}");
        assert!(unix.contains("docker` group"), "{unix}");
        let tcp = unreachable_hint("tcp://127.0.0.1:2375");
        assert!(tcp.contains("tcp://127.0.0.1:2375"), "{tcp}");
        let ssh = unreachable_hint("ssh://host");
        assert!(ssh.contains("not supported"), "{ssh}");
    }

    #[test]
    fn names_that_could_leave_the_request_path_are_refused() {
        for ok in [
            "connectware_service-manager",
            "a1",
            "0abc.def",
            &"f".repeat(64),
        ] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "a",
            "../containers/x",
            "a/b",
            "a?b",
            "-a",
            ".a",
            "a b",
            "é1",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn compose_labels_are_read_and_empty_ones_ignored() {
        let v = volume_info(
            "p_data".into(),
            "/var/lib/docker/volumes/p_data/_data".into(),
            HashMap::from([
                (PROJECT_LABEL.to_string(), "p".to_string()),
                (VOLUME_LABEL.to_string(), "data".to_string()),
            ]),
        )
        .unwrap();
        assert_eq!(v.compose_name(), Some("data"));
        assert_eq!(v.project(), Some("p"));
        let bare = volume_info(
            "x".into(),
            "/m".into(),
            HashMap::from([(VOLUME_LABEL.to_string(), String::new())]),
        )
        .unwrap();
        assert_eq!(bare.compose_name(), None);
        assert_eq!(bare.project(), None);
        let e = volume_info("x".into(), String::new(), HashMap::new()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::VolumeNotFound);
    }
}
