//! Who may ask for what: a person's permission on a repository, as GitHub reports it.

use serde::{Deserialize, Serialize};

/// A person's permission on a repository, ordered: `None < Read < Write < Admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    None,
    Read,
    Write,
    Admin,
}

impl Permission {
    /// From `GET .../collaborators/{username}/permission`: the role name decides when it
    /// is a built-in role (`maintain` counts as write, `triage` as read); a custom role
    /// falls back to its base `permission`. Anything unknown is `None` (least privilege).
    pub fn from_github(permission: &str, role_name: &str) -> Self {
        match role_name {
            "admin" => Self::Admin,
            "maintain" | "write" => Self::Write,
            "triage" | "read" => Self::Read,
            _ => match permission {
                "admin" => Self::Admin,
                "maintain" | "write" => Self::Write,
                "triage" | "read" => Self::Read,
                _ => Self::None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_from_role_and_base_permission() {
        assert_eq!(Permission::from_github("admin", "admin"), Permission::Admin);
        assert_eq!(
            Permission::from_github("write", "maintain"),
            Permission::Write
        );
        assert_eq!(Permission::from_github("write", "write"), Permission::Write);
        assert_eq!(Permission::from_github("read", "triage"), Permission::Read);
        assert_eq!(Permission::from_github("read", "read"), Permission::Read);
        assert_eq!(Permission::from_github("none", "none"), Permission::None);
        // A custom role falls back to its base permission.
        assert_eq!(
            Permission::from_github("write", "deployer"),
            Permission::Write
        );
        assert_eq!(Permission::from_github("bogus", "bogus"), Permission::None);
        assert!(Permission::Admin > Permission::Write);
        assert!(Permission::Write > Permission::Read);
        assert!(Permission::Read > Permission::None);
    }
}
