//! The bounds on what one policy input may cost to parse and validate.

/// Bounds on what one input may cost; every limit has a clear error when exceeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Size of the whole input.
    pub max_input_bytes: usize,
    /// YAML documents in one input.
    pub max_documents: usize,
    /// YAML nodes in one input once aliases are expanded.
    pub max_nodes: usize,
    /// Bytes of scalars in one input once aliases are expanded.
    pub max_scalar_bytes: usize,
    /// Rules in one policy, all kinds together; also bounds one rule's syscall list.
    pub max_rules: usize,
    /// Entries of `fromSource`, `tags`, selector labels and expression values.
    pub max_list_len: usize,
    /// Length of one path, directory or pattern (Linux `PATH_MAX`).
    pub max_path_len: usize,
    /// Length of a message, tag, name or label.
    pub max_string_len: usize,
    /// Diagnostics kept for one input; the rest are counted in a final one.
    pub max_diagnostics: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_input_bytes: 1024 * 1024,
            max_documents: 256,
            max_nodes: 200_000,
            max_scalar_bytes: 4 * 1024 * 1024,
            max_rules: 1024,
            max_list_len: 64,
            max_path_len: 4096,
            max_string_len: 4096,
            max_diagnostics: 1000,
        }
    }
}
