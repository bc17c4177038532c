{
  description = "warden: kernel-enforced sandboxes for AI coding agents, declared in one KDL file";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    flake-utils.url = "github:numtide/flake-utils";
  };

  outputs = { self, nixpkgs, flake-utils }:
    flake-utils.lib.eachSystem [ "x86_64-linux" "aarch64-linux" ] (system:
      let
        pkgs = nixpkgs.legacyPackages.${system};
        warden = pkgs.rustPlatform.buildRustPackage {
          pname = "warden";
          version = "0.1.0";
          src = self;
          cargoLock.lockFile = ./Cargo.lock;
          # warden and the small init it puts in images (see ARCHITECTURE.md).
          cargoBuildFlags = [ "-p" "warden" "-p" "warden-init" ];
          # The full suite needs root (namespaces); the flake check runs the pure parts.
          cargoTestFlags = [ "-p" "warden-lang" "-p" "warden-compile" "-p" "warden-wire" ];
          meta.mainProgram = "warden";
        };

        # Build an image from Nix packages: their closure, as written by
        # exportReferencesGraph, is handed to `warden build` through `nix-closure`.
        wardenImage = { name, packages, wardenFile }:
          pkgs.runCommand "warden-image-${name}" {
            nativeBuildInputs = [ warden ];
            exportReferencesGraph = [ "closure" (pkgs.buildEnv { name = "${name}-env"; paths = packages; }) ];
          } ''
            cp ${wardenFile} warden.kdl
            export WARDEN_CACHE_DIR=$TMPDIR/cache SOURCE_DATE_EPOCH=0
            warden build warden.kdl --out $out
          '';
      in {
        packages.default = warden;
        packages.warden = warden;
        apps.default = flake-utils.lib.mkApp { drv = warden; };
        lib.wardenImage = wardenImage;
        checks = {
          build = warden;
          clippy = warden.overrideAttrs (old: {
            pname = "warden-clippy";
            nativeBuildInputs = (old.nativeBuildInputs or [ ]) ++ [ pkgs.clippy ];
            buildPhase = "cargo clippy --workspace --all-targets --offline -- -D warnings";
            installPhase = "touch $out";
            doCheck = false;
          });
        };
        devShells.default = pkgs.mkShell {
          packages = with pkgs; [ cargo rustc clippy rustfmt busybox crun runc skopeo umoci tinyproxy ];
        };
      });
}
