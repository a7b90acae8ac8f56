{
  description = "Redis Dictator: one Redis master per service, elected through ZooKeeper";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # The lockfile is written with `omit-lockfile-registry-resolved`, so its entries carry an
      # `integrity` but no `resolved` URL, and importNpmLock fetches only what has one. Put back the
      # registry URL npm would use (https://registry.npmjs.org/<name>/-/<basename>-<version>.tgz);
      # entries that already have `resolved` (or are links / the root) are left alone.
      withRegistryUrls =
        lib: lock:
        lock
        // {
          packages = lib.mapAttrs (
            path: m:
            if path == "" || m ? resolved || (m.link or false) || !(m ? version) || !(m ? integrity) then
              m
            else
              let
                name = m.name or (lib.last (lib.splitString "node_modules/" path));
                base = lib.last (lib.splitString "/" name);
              in
              m // { resolved = "https://registry.npmjs.org/${name}/-/${base}-${m.version}.tgz"; }
          ) lock.packages;
        };
    in
    {
      packages = forAllSystems (
        pkgs:
        let
          inherit (pkgs) lib;
          package = lib.importJSON ./package.json;
        in
        {
          default = pkgs.buildNpmPackage {
            pname = package.name;
            inherit (package) version;
            src = lib.cleanSource ./.;
            nodejs = pkgs.nodejs_20;

            npmDeps = pkgs.importNpmLock {
              npmRoot = ./.;
              packageLock = withRegistryUrls lib (lib.importJSON ./package-lock.json);
            };
            npmConfigHook = pkgs.importNpmLock.npmConfigHook;
            # Native add-ons of dev tools (esbuild, @parcel/watcher, msgpackr-extract) are not
            # needed to compile with tsc or to run the daemon; their pure-JS fallbacks are fine.
            npmRebuildFlags = [ "--ignore-scripts" ];

            # `npm run build` (tsc -p tsconfig.build.json) → dist/; `bin.dictator` is wrapped.
            # The test suite needs real ZooKeeper and Redis servers: run it with `nix develop -c npm test`.
            doCheck = false;

            meta = {
              description = package.description;
              license = lib.licenses.mit;
              mainProgram = "dictator";
              platforms = systems;
            };
          };
        }
      );

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [
            pkgs.nodejs_20
            pkgs.redis
            pkgs.zookeeper
            pkgs.jdk17
            pkgs.haproxy # test/integration/haproxy.test.ts
            pkgs.systemd # systemd-analyze, for test/examples.test.ts
            pkgs.openssl # the TLS tests make their certificates with it
          ];
          # test/support/servers.ts runs ZooKeeper with this classpath (no Debian jar under Nix).
          ZOOKEEPER_CLASSPATH = "${pkgs.zookeeper}/lib/*:${pkgs.zookeeper}/conf";
          shellHook = ''
            echo "redis-dictator dev shell: node $(node --version), $(redis-server --version | cut -d' ' -f1-3)"
          '';
        };
      });

      formatter = forAllSystems (pkgs: pkgs.nixfmt-rfc-style);
    };
}
