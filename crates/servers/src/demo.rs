//! `demo`: a tiny server so a fresh install has a working endpoint.

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ServerHandler, ServiceExt, schemars, tool, tool_handler, tool_router};

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
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Demo {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("berth-demo", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Berth's built-in demo server: `echo` returns its text, `add` adds two numbers.",
            )
    }
}

pub async fn run() -> anyhow::Result<()> {
    let service = Demo::default().serve(rmcp::transport::stdio()).await?;
    service.waiting().await?;
    Ok(())
}
