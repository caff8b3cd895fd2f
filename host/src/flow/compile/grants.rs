//! A step's `connections`: which of the flow's connections it may use,
//! and under which role its component knows each one.
//!
//! A component that exports `describe` names the roles it plays
//! (`graph`, `procore`); the step binds each role to a connection, in a
//! table (`{ graph = "graph_prod" }`) or a list (`["graph"]`: the role of
//! that name, or the component's only role). Every role the component
//! declares must be bound, and no other. A component without `describe`
//! is granted connections by name.

use std::collections::HashSet;

use toml::Spanned;

use super::super::authored::{AuthoredGrant, AuthoredStep};
use super::super::catalog::Description;
use super::super::model::ConnectionGrant;
use super::Compiler;
use super::references::StepName;

impl Compiler<'_, '_> {
    pub(super) fn grants(
        &mut self,
        step: &AuthoredStep,
        name: &StepName,
        declared: &HashSet<&str>,
        description: Option<&Description>,
    ) -> Vec<ConnectionGrant> {
        let mut grants: Vec<ConnectionGrant> = Vec::new();
        for g in &step.fields.connections {
            self.declared_connection(name, &g.connection, declared);
            let Some(role) = self.role(g, description) else {
                continue;
            };
            if grants.iter().any(|x| x.role == role) {
                let at = g.role.as_ref().unwrap_or(&g.connection);
                self.error(
                    at.span(),
                    format!("role `{role}` is bound twice"),
                    "bind each role to one connection",
                );
                continue;
            }
            grants.push(ConnectionGrant {
                role,
                connection: g.connection.get_ref().clone(),
            });
        }
        // A grant that could not be read may bind any role.
        if let Some(d) = description
            && let Some(uses) = &step.fields.uses
            && !step.unreadable("connections")
        {
            self.unbound_roles(name, uses, d, &grants);
        }
        grants
    }

    fn declared_connection(
        &mut self,
        step: &StepName,
        c: &Spanned<String>,
        declared: &HashSet<&str>,
    ) {
        if declared.contains(c.get_ref().as_str()) {
            return;
        }
        let mut known: Vec<&str> = declared.iter().copied().collect();
        known.sort();
        self.error(
            c.span(),
            format!(
                "{step} asks for connection `{}`, which the flow does not declare",
                c.get_ref()
            ),
            if known.is_empty() {
                "declare it under `[connections.NAME]`".to_string()
            } else {
                format!("declared connections: {}", known.join(", "))
            },
        );
    }

    /// The role a grant binds, when the component has it.
    fn role(&mut self, g: &AuthoredGrant, description: Option<&Description>) -> Option<String> {
        let Some(d) = description else {
            return Some(g.role.as_ref().unwrap_or(&g.connection).get_ref().clone());
        };
        let roles: Vec<&str> = d.connections.iter().map(|r| r.role.as_str()).collect();
        let (wanted, at) = match &g.role {
            Some(role) => (role.get_ref().as_str(), role),
            None => {
                let name = g.connection.get_ref().as_str();
                match roles.as_slice() {
                    _ if roles.contains(&name) => (name, &g.connection),
                    [only] => return Some(only.to_string()),
                    _ => (name, &g.connection),
                }
            }
        };
        if roles.contains(&wanted) {
            return Some(wanted.to_string());
        }
        self.error(
            at.span(),
            format!("component `{}` has no connection role `{wanted}`", d.name),
            if roles.is_empty() {
                format!("`{}` uses no connections: remove `connections`", d.name)
            } else {
                format!(
                    "its roles are: {}; bind one with `connections = {{ {} = \"{}\" }}`",
                    roles.join(", "),
                    roles[0],
                    g.connection.get_ref()
                )
            },
        );
        None
    }

    fn unbound_roles(
        &mut self,
        step: &StepName,
        uses: &Spanned<String>,
        d: &Description,
        grants: &[ConnectionGrant],
    ) {
        for role in &d.connections {
            if grants.iter().any(|g| g.role == role.role) {
                continue;
            }
            self.error(
                uses.span(),
                format!(
                    "component `{}` needs a connection for its role `{}` ({})",
                    d.name, role.role, role.summary
                ),
                format!(
                    "add `connections = {{ {} = \"CONNECTION\" }}` to {}",
                    role.role, step
                ),
            );
        }
    }
}
