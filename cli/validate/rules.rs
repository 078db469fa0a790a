//! The rule catalogue: a stable id for every check `validate` makes, numbered after the 38-item
//! checklist of Triton's model-loading behaviour (docs/validate.md), plus the ONNX cross-checks.

/// A validation rule: its id, name and what it checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The id (`TD001`).
    pub id: &'static str,
    /// A short name.
    pub name: &'static str,
    /// What it checks.
    pub summary: &'static str,
}

macro_rules! rules {
    ($($konst:ident = $id:literal, $name:literal, $summary:literal;)*) => {
        $(
            #[doc = concat!("`", $id, "` ", $name, ": ", $summary, ".")]
            pub const $konst: Rule = Rule { id: $id, name: $name, summary: $summary };
        )*
        /// Every rule, in id order.
        pub const ALL: &[Rule] = &[$($konst),*];
    };
}

rules! {
    REPO_PATH = "TD001", "repository-path", "the repository path must be a directory holding models";
    NON_MODEL_DIR = "TD002", "non-model-directory", "every root directory is loaded as a model (hidden and system directories too)";
    SYMLINK = "TD003", "symlink", "dangling symlinks have no modification time and no content; links leaving the repository are not packaged";
    MISSING_CONFIG = "TD004", "missing-config", "config.pbtxt must exist unless the backend can autofill it";
    CONFIG_NAME = "TD005", "model-config-name", "configs/<name>.pbtxt selection is consistent";
    NO_VERSION = "TD006", "no-version", "at least one version must be available under the version policy";
    LEADING_ZERO = "TD007", "version-leading-zero", "version directories with leading zeros are ignored";
    NON_NUMERIC_VERSION = "TD008", "version-not-numeric", "non-numeric version directories are ignored";
    VERSION_ALIAS = "TD009", "version-alias", "directory names that parse to the same or a prefixed version";
    MISSING_SPECIFIC_VERSION = "TD010", "specific-version-missing", "a version named by the policy has no directory";
    MISSING_MODEL_FILE = "TD011", "missing-model-file", "the backend's model file is present in every version";
    DUPLICATE_MODEL = "TD012", "duplicate-model", "model names are unique across repositories";
    PARSE = "TD013", "parse-error", "config.pbtxt is valid protobuf text format";
    UNKNOWN_FIELD = "TD014", "unknown-field", "every field exists in ModelConfig";
    UNKNOWN_ENUM = "TD015", "unknown-enum", "every enumeration value exists";
    REPEATED_FIELD = "TD016", "field-repeated", "non-repeated fields and oneofs are set once";
    PLACEHOLDER = "TD017", "unrendered-template", "no unrendered ${...} template placeholders";
    DUPLICATE_KEY = "TD018", "duplicate-key", "duplicate map keys and overwritten fields (last wins), octal literals";
    NAME_MISMATCH = "TD019", "name-mismatch", "the config name equals the directory name";
    UNKNOWN_BACKEND = "TD020", "backend-undetermined", "the backend can be determined";
    PLATFORM = "TD021", "platform", "platform is known and agrees with backend";
    ENSEMBLE_PLATFORM = "TD022", "ensemble-platform", "ensembles use platform ensemble and ensemble_scheduling";
    RUNTIME = "TD023", "backend-runtime", "the backend library is in the image and runtime stays in the backend directory";
    MAX_BATCH_SIZE = "TD024", "max-batch-size", "max_batch_size is non-negative";
    TENSOR_REQUIRED = "TD025", "tensor-required-field", "inputs and outputs name a data type and dims";
    TENSOR_DIMS = "TD026", "tensor-dims", "dimensions are >= 1 or -1";
    RESHAPE = "TD027", "reshape", "reshape agrees with dims";
    TENSOR_FORMAT = "TD028", "tensor-format", "format, shape tensors and non-linear IO are used where supported";
    DUPLICATE_TENSOR = "TD029", "duplicate-tensor", "input and output names are unique";
    LABEL_FILE = "TD030", "label-file", "label files exist inside the model directory";
    BATCH_IO = "TD031", "batch-io", "batch inputs and outputs are well formed";
    DYNAMIC_BATCHING = "TD032", "dynamic-batching", "preferred batch sizes fit max_batch_size";
    PRIORITY = "TD033", "priority-queue", "priority levels and queue policies are consistent";
    SEQUENCE = "TD034", "sequence-batching", "sequence batching controls and response cache are consistent";
    INSTANCE_GROUP = "TD035", "instance-group", "instance groups are valid for the platform and devices";
    ENSEMBLE_STRUCTURE = "TD036", "ensemble-structure", "ensemble steps are complete and every tensor is connected";
    ENSEMBLE_MODELS = "TD037", "ensemble-models", "ensemble steps name available models whose tensors match";
    WARMUP_STATE = "TD038", "warmup-state-parameters", "warmup, state, parameters and metrics are usable";
    ONNX_IO_NAME = "TD039", "onnx-io-name", "config inputs and outputs exist in the ONNX graph and vice versa";
    ONNX_DTYPE = "TD040", "onnx-dtype", "config data types match the ONNX graph";
    ONNX_DIMS = "TD041", "onnx-dims", "config dims match the ONNX graph";
    ONNX_READ = "TD042", "onnx-unreadable", "model.onnx is a readable ONNX model";
}

/// Looks a rule up by id (`TD012`) or name (`duplicate-model`).
pub fn find(key: &str) -> Option<Rule> {
    ALL.iter()
        .copied()
        .find(|r| r.id.eq_ignore_ascii_case(key) || r.name == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_sequential_and_findable() {
        for (i, r) in ALL.iter().enumerate() {
            assert_eq!(r.id, format!("TD{:03}", i + 1));
            assert_eq!(find(r.id), Some(*r));
            assert_eq!(find(r.name), Some(*r));
        }
        let mut names: Vec<_> = ALL.iter().map(|r| r.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
    }
}
