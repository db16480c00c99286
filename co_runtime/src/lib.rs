//! placeholder, replaced in the co_runtime commit
