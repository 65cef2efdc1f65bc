//! `demo`: a tiny server so a fresh install has a working endpoint.

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use std::time::Duration;

use rmcp::model::{Implementation, ProgressNotificationParam, ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, ServerHandler, ServiceExt, schemars, tool, tool_handler, tool_router};

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct EchoRequest {
    /// The text to send back.
    pub text: String,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct AddRequest {
    pub a: f64,
    pub b: f64,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct CountdownRequest {
    /// How long to count down, in seconds (at most 600).
    pub seconds: f64,
}

#[derive(Debug, Clone)]
pub struct Demo {
    tool_router: ToolRouter<Self>,
}

impl Default for Demo {
    fn default() -> Self {
        Demo {
            tool_router: Self::tool_router(),
        }
    }
}

#[tool_router]
impl Demo {
    #[tool(description = "Return the given text unchanged")]
    fn echo(&self, Parameters(EchoRequest { text }): Parameters<EchoRequest>) -> String {
        text
    }

    #[tool(description = "Add two numbers")]
    fn add(&self, Parameters(AddRequest { a, b }): Parameters<AddRequest>) -> String {
        (a + b).to_string()
    }

    #[tool(
        description = "Wait the given number of seconds, reporting progress every 100 ms (when the request has a progress token); stops early when cancelled"
    )]
    async fn countdown(
        &self,
        Parameters(CountdownRequest { seconds }): Parameters<CountdownRequest>,
        context: RequestContext<RoleServer>,
    ) -> String {
        let steps = (seconds.clamp(0.0, 600.0) * 10.0).round() as u32;
        let token = context.meta.get_progress_token();
        for step in 1..=steps {
            tokio::select! {
                _ = context.ct.cancelled() => {
                    // On stderr, so an operator (and a test) can see the cancellation arrive.
                    eprintln!("countdown cancelled after {step} of {steps} steps");
                    return "cancelled".into();
                }
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            if let Some(token) = &token {
                let progress = ProgressNotificationParam::new(token.clone(), f64::from(step))
                    .with_total(f64::from(steps));
                if context.peer.notify_progress(progress).await.is_err() {
                    return "the client went away".into();
                }
            }
        }
        format!("counted down {seconds} s")
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Demo {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("berth-demo", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Berth's built-in demo server: `echo` returns its text, `add` adds two numbers, `countdown` waits with progress.",
            )
    }
}

pub async fn run() -> anyhow::Result<()> {
    let service = Demo::default().serve(rmcp::transport::stdio()).await?;
    service.waiting().await?;
    Ok(())
}
