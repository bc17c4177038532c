//! Integration tests for warden-image. Several need root and Debian packages
//! (`busybox-static`, `skopeo`, `umoci`, `crun`, `nix-bin`, `python3`); CI runs as root
//! with them installed, and a missing tool fails the test with the package to install.

mod base;
mod build;
mod host;
mod nix;
mod support;
