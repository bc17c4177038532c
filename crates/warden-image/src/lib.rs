//! warden-image
