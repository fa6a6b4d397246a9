//! uid/gid → name, from the host's `/etc/passwd` and `/etc/group` (`user.name`,
//! `group.name`). Names inside containers are not looked up: a container's uid that the
//! host does not know reads as missing (`<NA>`), except 0, which is `root` everywhere.

use std::path::Path;

use rustc_hash::FxHashMap;

/// Entries kept at most (hostile or huge files stay bounded).
const MAX_ENTRIES: usize = 65_536;
/// Bytes read of each file at most.
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, Clone, Default)]
pub struct UserDb {
    users: FxHashMap<u32, Box<str>>,
    groups: FxHashMap<u32, Box<str>>,
}

impl UserDb {
    /// Reads `<root>/etc/passwd` and `<root>/etc/group`; unreadable files give an empty
    /// table (names then read as missing), malformed lines are skipped.
    pub fn load(root: &Path) -> UserDb {
        let read = |name: &str| {
            super::container::read_bounded(&root.join("etc").join(name), MAX_FILE_BYTES)
                .unwrap_or_default()
        };
        UserDb {
            users: parse_db(&read("passwd")),
            groups: parse_db(&read("group")),
        }
    }

    /// From file contents (tests).
    pub fn from_contents(passwd: &str, group: &str) -> UserDb {
        UserDb {
            users: parse_db(passwd),
            groups: parse_db(group),
        }
    }

    pub fn user_name(&self, uid: u32) -> Option<&str> {
        self.users
            .get(&uid)
            .map(|n| &**n)
            .or((uid == 0).then_some("root"))
    }

    pub fn group_name(&self, gid: u32) -> Option<&str> {
        self.groups
            .get(&gid)
            .map(|n| &**n)
            .or((gid == 0).then_some("root"))
    }
}

/// `name:password:id:…` lines → id → name (first definition wins, as getpwuid).
fn parse_db(text: &str) -> FxHashMap<u32, Box<str>> {
    let mut out = FxHashMap::default();
    for line in text.lines() {
        if out.len() >= MAX_ENTRIES {
            break;
        }
        let mut parts = line.split(':');
        let (Some(name), Some(_), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let Ok(id) = id.trim().parse::<u32>() else {
            continue;
        };
        if name.is_empty() || name.starts_with('#') || name.len() > 256 {
            continue;
        }
        out.entry(id).or_insert_with(|| Box::from(name));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_passwd_and_group_and_skips_garbage() {
        let db = UserDb::from_contents(
            "root:x:0:0:root:/root:/bin/bash\n# comment\n\nwww-data:x:33:33::/var/www:/usr/sbin/nologin\nbroken\nbad:x:notanumber:1\ndup:x:33:33\n",
            "root:x:0:\nadm:x:4:syslog\n",
        );
        assert_eq!(db.user_name(0), Some("root"));
        assert_eq!(db.user_name(33), Some("www-data"));
        assert_eq!(db.user_name(1234), None);
        assert_eq!(db.group_name(4), Some("adm"));
        let empty = UserDb::default();
        assert_eq!(empty.user_name(0), Some("root"));
        assert_eq!(empty.group_name(5), None);
    }

    #[test]
    fn loads_host_files() {
        let db = UserDb::load(Path::new("/"));
        assert_eq!(db.user_name(0), Some("root"));
        let missing = UserDb::load(Path::new("/nonexistent-root"));
        assert_eq!(missing.user_name(33), None);
    }
}
