//! `[secrets]`: the flow's declared secrets and where their values come
//! from. Nothing is read here; binding reads the values.

use toml::Spanned;

use super::super::authored::AuthoredSecret;
use super::super::compiled::SecretDecl;
use super::Compiler;

impl Compiler<'_, '_> {
    pub(super) fn secret_decls(
        &mut self,
        authored: &[(Spanned<String>, Spanned<AuthoredSecret>)],
    ) -> Vec<SecretDecl> {
        let mut decls = Vec::new();
        for (name, secret) in authored {
            if !self.valid_name(name, "secret name", "use letters, digits, `-` and `_`") {
                continue;
            }
            let env = &secret.get_ref().env;
            if !is_variable_name(env.get_ref()) {
                self.error(
                    env.span(),
                    format!("`{}` is not an environment variable name", env.get_ref()),
                    "write the variable's name, like `env = \"GRAPH_CLIENT_SECRET\"`",
                );
                continue;
            }
            decls.push(SecretDecl {
                name: name.get_ref().clone(),
                env: env.get_ref().clone(),
                span: env.span(),
            });
        }
        decls
    }

    /// The declared secret read from `variable`, if any.
    pub(super) fn secret_reading(&self, variable: &str) -> Option<&SecretDecl> {
        self.secrets.iter().find(|s| s.env == variable)
    }
}

/// Letters, digits and `_`, not starting with a digit: what a shell exports.
fn is_variable_name(s: &str) -> bool {
    s.chars().next().is_some_and(|c| !c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}
