//! What the emulator's wire tests share: an emulator on loopback with a
//! client, tokens from both services, and requests to each.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use sluice_emulator::{EmulatorConfig, RunningEmulator};

pub struct Env {
    pub emu: RunningEmulator,
    pub http: reqwest::Client,
    vars: std::collections::HashMap<String, String>,
}

pub async fn start(config: EmulatorConfig) -> Env {
    let emu = sluice_emulator::start(config).await.unwrap();
    let vars = emu.env_vars().into_iter().collect();
    Env {
        emu,
        http: reqwest::Client::new(),
        vars,
    }
}

impl Env {
    pub fn var(&self, k: &str) -> &str {
        &self.vars[k]
    }

    /// Graph's sendMail for the report's sending mailbox.
    pub fn send_mail_url(&self) -> String {
        format!(
            "{}/users/{}/sendMail",
            self.var("GRAPH_BASE_URL"),
            self.var("REPORT_MAIL_FROM")
        )
    }

    pub async fn graph_token(&self) -> String {
        let r = self
            .http
            .post(self.var("GRAPH_TOKEN_URL"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.var("GRAPH_CLIENT_ID")),
                ("client_secret", self.var("GRAPH_CLIENT_SECRET")),
                ("scope", "https://graph.microsoft.com/.default"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["token_type"], "Bearer");
        body["access_token"].as_str().unwrap().to_string()
    }

    pub async fn procore_token(&self) -> String {
        let r = self
            .http
            .post(self.var("PROCORE_TOKEN_URL"))
            .json(&json!({"grant_type": "client_credentials", "client_id": self.var("PROCORE_CLIENT_ID"), "client_secret": self.var("PROCORE_CLIENT_SECRET")}))
            .send()
            .await
            .unwrap();
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            body["token_type"], "bearer",
            "Procore says bearer in lower case"
        );
        body["access_token"].as_str().unwrap().to_string()
    }

    pub async fn graph(&self, token: &str, url: &str) -> reqwest::Response {
        self.http.get(url).bearer_auth(token).send().await.unwrap()
    }

    pub async fn procore(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let url = format!("{}/rest/v1.0/{path}", self.var("PROCORE_BASE_URL"));
        let mut r = self
            .http
            .request(method, url)
            .bearer_auth(token)
            .header("Procore-Company-Id", self.var("PROCORE_COMPANY_ID"));
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send().await.unwrap()
    }

    /// A Procore GET's JSON body.
    pub async fn procore_json(&self, token: &str, path: &str) -> Value {
        self.procore(token, reqwest::Method::GET, path, None)
            .await
            .json()
            .await
            .unwrap()
    }
}

pub fn company(env: &Env) -> String {
    env.var("PROCORE_COMPANY_ID").to_string()
}
