//! warden-lang
