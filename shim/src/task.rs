//! The ttrpc `Task` service: a thin adapter from containerd's requests onto `TaskService`.

use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::api::{
    CheckpointTaskRequest, CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest,
    CreateTaskResponse, DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest,
    PauseRequest, PidsRequest, PidsResponse, ResizePtyRequest, ResumeRequest, ShutdownRequest,
    StartRequest, StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse,
    UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::shim_async::Task;
use containerd_shim::protos::ttrpc;
use containerd_shim::protos::ttrpc::r#async::TtrpcContext;
use tracing::Instrument;

use crate::error::ShimError;
use crate::service::{ProcessId, TaskService};

/// containerd's view of palisade: every call is logged with its container and handed to the service.
#[derive(Clone)]
pub struct TaskAdapter {
    svc: Arc<TaskService>,
}

impl TaskAdapter {
    pub fn new(svc: Arc<TaskService>) -> Self {
        TaskAdapter { svc }
    }
}

fn span(call: &'static str, container: &str, exec: &str) -> tracing::Span {
    tracing::info_span!("task", call, container = %container, exec = %exec)
}

/// Runs one call inside its span, so that its failure is logged with the container too.
async fn call<T>(
    span: tracing::Span,
    fut: impl std::future::Future<Output = Result<T, ShimError>>,
) -> ttrpc::Result<T> {
    async move {
        fut.await.map_err(|e| {
            tracing::warn!(code = ?e.code(), "{e}");
            ttrpc::Error::from(e)
        })
    }
    .instrument(span)
    .await
}

#[async_trait]
impl Task for TaskAdapter {
    async fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> ttrpc::Result<StateResponse> {
        let key = ProcessId::from_exec_id(&req.exec_id);
        call(
            span("state", &req.id, &req.exec_id),
            self.svc.state(&req.id, &key),
        )
        .await
    }

    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> ttrpc::Result<CreateTaskResponse> {
        let s = span("create", &req.id, "");
        let pid = call(s, self.svc.create(req)).await?;
        Ok(CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    async fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        let key = ProcessId::from_exec_id(&req.exec_id);
        let pid = call(
            span("start", &req.id, &req.exec_id),
            self.svc.start(&req.id, key),
        )
        .await?;
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: DeleteRequest,
    ) -> ttrpc::Result<DeleteResponse> {
        let key = ProcessId::from_exec_id(&req.exec_id);
        call(
            span("delete", &req.id, &req.exec_id),
            self.svc.delete(&req.id, &key),
        )
        .await
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        let processes = call(span("pids", &req.id, ""), self.svc.pids(&req.id)).await?;
        Ok(PidsResponse {
            processes,
            ..Default::default()
        })
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: PauseRequest) -> ttrpc::Result<Empty> {
        call(span("pause", &req.id, ""), self.svc.pause(&req.id)).await?;
        Ok(Empty::new())
    }

    async fn resume(&self, _ctx: &TtrpcContext, req: ResumeRequest) -> ttrpc::Result<Empty> {
        call(span("resume", &req.id, ""), self.svc.resume(&req.id)).await?;
        Ok(Empty::new())
    }

    async fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        req: CheckpointTaskRequest,
    ) -> ttrpc::Result<Empty> {
        call(span("checkpoint", &req.id, ""), async {
            Err(ShimError::Unsupported("checkpoint"))
        })
        .await
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> ttrpc::Result<Empty> {
        let key = ProcessId::from_exec_id(&req.exec_id);
        let fut = self.svc.kill(&req.id, &key, req.signal, req.all);
        call(span("kill", &req.id, &req.exec_id), fut).await?;
        Ok(Empty::new())
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> ttrpc::Result<Empty> {
        let s = span("exec", &req.id, &req.exec_id);
        call(s, self.svc.exec(req)).await?;
        Ok(Empty::new())
    }

    async fn resize_pty(&self, _ctx: &TtrpcContext, req: ResizePtyRequest) -> ttrpc::Result<Empty> {
        let key = ProcessId::from_exec_id(&req.exec_id);
        let fut = self.svc.resize_pty(&req.id, &key, req.width, req.height);
        call(span("resize_pty", &req.id, &req.exec_id), fut).await?;
        Ok(Empty::new())
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: CloseIORequest) -> ttrpc::Result<Empty> {
        let key = ProcessId::from_exec_id(&req.exec_id);
        if req.stdin {
            call(
                span("close_io", &req.id, &req.exec_id),
                self.svc.close_io(&req.id, &key),
            )
            .await?;
        }
        Ok(Empty::new())
    }

    async fn update(&self, _ctx: &TtrpcContext, req: UpdateTaskRequest) -> ttrpc::Result<Empty> {
        let s = span("update", &req.id, "");
        call(s, self.svc.update(req)).await?;
        Ok(Empty::new())
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        let key = ProcessId::from_exec_id(&req.exec_id);
        let exit = call(
            span("wait", &req.id, &req.exec_id),
            self.svc.wait(&req.id, &key),
        )
        .await?;
        Ok(WaitResponse {
            exit_status: exit.code,
            exited_at: MessageField::some(Timestamp::from(exit.at)),
            ..Default::default()
        })
    }

    async fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> ttrpc::Result<StatsResponse> {
        let stats = call(span("stats", &req.id, ""), self.svc.stats(&req.id)).await?;
        Ok(StatsResponse {
            stats: MessageField::some(stats),
            ..Default::default()
        })
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: ConnectRequest,
    ) -> ttrpc::Result<ConnectResponse> {
        let task_pid = call(span("connect", &req.id, ""), self.svc.init_pid(&req.id)).await?;
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, req: ShutdownRequest) -> ttrpc::Result<Empty> {
        self.svc
            .shutdown()
            .instrument(span("shutdown", &req.id, ""))
            .await;
        Ok(Empty::new())
    }
}
