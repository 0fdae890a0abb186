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

/// Whose permission a label needs. A label makes the title and body the agent's
/// instructions, so by default the author must be allowed to ask for tasks as
/// well as the person who added the label; `Labeller` trusts whatever the labeller
/// labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LabelTrust {
    #[default]
    AuthorAndLabeller,
    Labeller,
}

impl LabelTrust {
    pub const ALL: [LabelTrust; 2] = [LabelTrust::AuthorAndLabeller, LabelTrust::Labeller];

    /// The setting's value: `author-and-labeller` or `labeller`.
    pub fn as_str(self) -> &'static str {
        match self {
            LabelTrust::AuthorAndLabeller => "author-and-labeller",
            LabelTrust::Labeller => "labeller",
        }
    }
}

impl std::str::FromStr for LabelTrust {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|trust| trust.as_str() == s)
            .ok_or_else(|| "expected `author-and-labeller` or `labeller`".to_owned())
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

    #[test]
    fn label_trust_reads_its_setting() {
        for trust in LabelTrust::ALL {
            assert_eq!(trust.as_str().parse(), Ok(trust));
        }
        assert_eq!(LabelTrust::default(), LabelTrust::AuthorAndLabeller);
        assert!("author".parse::<LabelTrust>().is_err());
    }
}
