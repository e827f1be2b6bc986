//! Pod labels, read from containerd's record of the pod sandbox: CRI keeps them as the labels
//! of the sandbox container, not in any container's OCI spec, so policy selectors need them
//! from containerd's containers service.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Endpoint, Uri};

/// How long one lookup may take before the container is refused (or started without labels,
/// when no policy needs them).
const TIMEOUT: Duration = Duration::from_secs(3);
const GET: &str = "/containerd.services.containers.v1.Containers/Get";
/// Labels containerd's CRI adds to the sandbox record itself, not the pod's.
const CRI_LABEL_PREFIXES: [&str; 2] = ["io.cri-containerd.", "io.containerd."];

/// Reading the pod's labels failed.
#[derive(Debug, thiserror::Error)]
pub enum LabelsError {
    #[error("containerd {address}: connect: {source}")]
    Connect {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("containerd {address}: get sandbox {sandbox}: {status}")]
    Get {
        address: String,
        sandbox: String,
        status: Box<tonic::Status>,
    },
    #[error("containerd {address}: get sandbox {sandbox}: no answer within {TIMEOUT:?}")]
    Timeout { address: String, sandbox: String },
    #[error("containerd namespace {0:?}: not a valid grpc header value")]
    Namespace(String),
}

/// The part of `containerd.services.containers.v1.GetContainerRequest` we send.
#[derive(Clone, PartialEq, prost::Message)]
struct GetContainerRequest {
    #[prost(string, tag = "1")]
    id: String,
}

/// The part of `containerd.services.containers.v1.Container` we read; the rest is skipped.
#[derive(Clone, PartialEq, prost::Message)]
struct ContainerRecord {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(map = "string, string", tag = "2")]
    labels: HashMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct GetContainerResponse {
    #[prost(message, optional, tag = "1")]
    container: Option<ContainerRecord>,
}

/// The pod labels of sandbox `sandbox` in containerd namespace `namespace`, from containerd
/// listening on `address` (the shim's `-address`, a unix socket path or `unix://` URL).
pub async fn pod_labels(
    address: &str,
    namespace: &str,
    sandbox: &str,
) -> Result<BTreeMap<String, String>, LabelsError> {
    match tokio::time::timeout(TIMEOUT, get(address, namespace, sandbox)).await {
        Ok(r) => r,
        Err(_) => Err(LabelsError::Timeout {
            address: address.into(),
            sandbox: sandbox.into(),
        }),
    }
}

async fn get(
    address: &str,
    namespace: &str,
    sandbox: &str,
) -> Result<BTreeMap<String, String>, LabelsError> {
    let path = PathBuf::from(address.strip_prefix("unix://").unwrap_or(address));
    let connect_err = |source| LabelsError::Connect {
        address: address.into(),
        source,
    };
    let channel = Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .map_err(connect_err)?;
    let get_err = |status| LabelsError::Get {
        address: address.into(),
        sandbox: sandbox.into(),
        status: Box::new(status),
    };
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| get_err(tonic::Status::unavailable(e.to_string())))?;
    let mut req = tonic::Request::new(GetContainerRequest { id: sandbox.into() });
    req.metadata_mut().insert(
        "containerd-namespace",
        namespace
            .parse()
            .map_err(|_| LabelsError::Namespace(namespace.into()))?,
    );
    let resp: tonic::Response<GetContainerResponse> = grpc
        .unary(
            req,
            http::uri::PathAndQuery::from_static(GET),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .map_err(get_err)?;
    let labels = resp
        .into_inner()
        .container
        .map(|c| c.labels)
        .unwrap_or_default();
    Ok(pod_only(labels))
}

/// The pod's own labels: containerd's CRI adds its bookkeeping (`io.cri-containerd.kind`, ...).
fn pod_only(labels: HashMap<String, String>) -> BTreeMap<String, String> {
    labels
        .into_iter()
        .filter(|(k, _)| !CRI_LABEL_PREFIXES.iter().any(|p| k.starts_with(p)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn cri_bookkeeping_labels_are_not_pod_labels() {
        let labels = HashMap::from([
            ("app".to_string(), "web".to_string()),
            ("io.cri-containerd.kind".to_string(), "sandbox".to_string()),
            (
                "io.containerd.image.config.stop-signal".to_string(),
                "SIGTERM".to_string(),
            ),
        ]);
        assert_eq!(
            pod_only(labels),
            BTreeMap::from([("app".to_string(), "web".to_string())])
        );
    }

    #[test]
    fn unknown_fields_of_containerds_record_are_skipped() {
        // A record as containerd encodes it: id (1), labels (2), image (3), runtime (4, a
        // message), spec (5, an Any): only id and labels are declared here.
        let mut buf = Vec::new();
        let rec = ContainerRecord {
            id: "sb1".into(),
            labels: HashMap::from([("tier".to_string(), "db".to_string())]),
        };
        rec.encode(&mut buf).unwrap();
        prost::encoding::string::encode(3, &"docker.io/library/pause:3.9".to_string(), &mut buf);
        prost::encoding::bytes::encode(4, &vec![10, 3, b'r', b'u', b'n'], &mut buf);
        let mut outer = Vec::new();
        prost::encoding::bytes::encode(1, &buf, &mut outer);
        let got = GetContainerResponse::decode(outer.as_slice()).unwrap();
        assert_eq!(got.container.unwrap().labels["tier"], "db");
    }
}
