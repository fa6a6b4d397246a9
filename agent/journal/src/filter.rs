//! The cheap include/exclude filter on `_SYSTEMD_UNIT`, `SYSLOG_IDENTIFIER` and the kernel
//! (`_TRANSPORT=kernel`), decided before compressed payloads of an entry are decoded.
//!
//! Semantics (as Vector's journald `include_units`/`exclude_units`): with no include rule
//! every entry is included; with some, an entry is included when it matches any of them. An
//! entry matching any exclude rule is dropped. A unit name without a `.` means `NAME.service`.

/// Which fields [`Filter::accepts`] looks at.
pub const FILTER_FIELDS: [&str; 3] = ["_SYSTEMD_UNIT", "SYSLOG_IDENTIFIER", "_TRANSPORT"];

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    include_units: Vec<Vec<u8>>,
    exclude_units: Vec<Vec<u8>>,
    include_identifiers: Vec<Vec<u8>>,
    exclude_identifiers: Vec<Vec<u8>>,
    include_kernel: bool,
    exclude_kernel: bool,
}

/// `kubelet` → `kubelet.service`; `containerd.service`, `session-1.scope` unchanged.
pub fn normalize_unit(unit: &str) -> String {
    if unit.contains('.') {
        unit.to_string()
    } else {
        format!("{unit}.service")
    }
}

impl Filter {
    /// A filter that accepts everything.
    pub fn new() -> Filter {
        Filter::default()
    }

    pub fn include_unit(mut self, unit: &str) -> Filter {
        self.include_units.push(normalize_unit(unit).into_bytes());
        self
    }

    pub fn exclude_unit(mut self, unit: &str) -> Filter {
        self.exclude_units.push(normalize_unit(unit).into_bytes());
        self
    }

    pub fn include_identifier(mut self, ident: &str) -> Filter {
        self.include_identifiers.push(ident.as_bytes().to_vec());
        self
    }

    pub fn exclude_identifier(mut self, ident: &str) -> Filter {
        self.exclude_identifiers.push(ident.as_bytes().to_vec());
        self
    }

    /// Includes kernel messages (`_TRANSPORT=kernel`; they have no unit).
    pub fn include_kernel(mut self, yes: bool) -> Filter {
        self.include_kernel = yes;
        self
    }

    pub fn exclude_kernel(mut self, yes: bool) -> Filter {
        self.exclude_kernel = yes;
        self
    }

    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    fn has_includes(&self) -> bool {
        self.include_kernel
            || !self.include_units.is_empty()
            || !self.include_identifiers.is_empty()
    }

    /// Decides from the entry's `_SYSTEMD_UNIT`, `SYSLOG_IDENTIFIER` and `_TRANSPORT`.
    pub fn accepts(
        &self,
        unit: Option<&[u8]>,
        ident: Option<&[u8]>,
        transport: Option<&[u8]>,
    ) -> bool {
        let listed =
            |list: &[Vec<u8>], v: Option<&[u8]>| v.is_some_and(|v| list.iter().any(|x| x == v));
        let kernel = transport == Some(b"kernel".as_slice());
        if listed(&self.exclude_units, unit)
            || listed(&self.exclude_identifiers, ident)
            || (self.exclude_kernel && kernel)
        {
            return false;
        }
        !self.has_includes()
            || listed(&self.include_units, unit)
            || listed(&self.include_identifiers, ident)
            || (self.include_kernel && kernel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_exclude_and_kernel() {
        let all = Filter::new();
        assert!(all.is_empty());
        assert!(all.accepts(None, None, None));

        let f = Filter::new()
            .include_unit("kubelet")
            .include_unit("containerd.service")
            .include_kernel(true);
        assert!(f.accepts(Some(b"kubelet.service"), None, None));
        assert!(f.accepts(
            Some(b"containerd.service"),
            Some(b"containerd"),
            Some(b"stdout")
        ));
        assert!(f.accepts(None, Some(b"kernel"), Some(b"kernel")));
        assert!(!f.accepts(Some(b"sshd.service"), None, Some(b"syslog")));
        assert!(!f.accepts(None, None, None));

        let g = Filter::new()
            .exclude_unit("sshd")
            .exclude_identifier("CRON")
            .exclude_kernel(true);
        assert!(g.accepts(Some(b"kubelet.service"), None, None));
        assert!(!g.accepts(Some(b"sshd.service"), None, None));
        assert!(!g.accepts(None, Some(b"CRON"), None));
        assert!(!g.accepts(None, None, Some(b"kernel")));

        let both = Filter::new()
            .include_identifier("kubelet")
            .exclude_unit("kubelet");
        assert!(!both.accepts(Some(b"kubelet.service"), Some(b"kubelet"), None));
        assert_eq!(normalize_unit("session-1.scope"), "session-1.scope");
    }
}
