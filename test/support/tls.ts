/**
 * Certificates for TLS tests, made with `openssl` in a temp dir (removed with the scope): a CA,
 * a server certificate for 127.0.0.1 / localhost, a client certificate, an expired server
 * certificate and a second, unrelated CA.
 */
import { execFile } from "node:child_process"
import { readFileSync } from "node:fs"
import * as path from "node:path"
import { Effect, type Scope } from "effect"
import { HarnessError, tempDir, writeFile } from "./servers.js"

export interface CertFiles {
  readonly dir: string
  /** PEM paths. */
  readonly caCert: string
  readonly serverCert: string
  readonly serverKey: string
  readonly clientCert: string
  readonly clientKey: string
  /** Signed by the CA, for 127.0.0.1, but expired yesterday. */
  readonly expiredServerCert: string
  readonly expiredServerKey: string
  /** A CA that signed nothing here. */
  readonly otherCaCert: string
  /** PEM text of a file above. */
  readonly pem: (file: string) => string
}

const openssl = (cwd: string, args: ReadonlyArray<string>): Effect.Effect<void, HarnessError> =>
  Effect.async<void, HarnessError>((resume) => {
    const child = execFile("openssl", [...args], { cwd, timeout: 30_000 }, (error, _stdout, stderr) => {
      if (error) {
        resume(Effect.fail(new HarnessError({ message: `openssl ${args.join(" ")}: ${error.message} ${stderr} (Debian: apt-get install openssl)` })))
      } else resume(Effect.void)
    })
    return Effect.sync(() => child.kill("SIGKILL"))
  })

export const makeCerts: Effect.Effect<CertFiles, HarnessError, Scope.Scope> = Effect.gen(function* () {
  const dir = yield* tempDir("certs")
  const ext = path.join(dir, "san.ext")
  yield* writeFile(ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
  const ca = (name: string) =>
    openssl(dir, ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", `${name}.key`, "-out", `${name}.crt`, "-days", "2", "-subj", `/CN=dictator test ${name}`])
  const signed = (name: string, cn: string, days: string) =>
    Effect.zipRight(
      openssl(dir, ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${cn}`]),
      openssl(dir, ["x509", "-req", "-in", `${name}.csr`, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", `${name}.crt`, "-days", days, "-extfile", "san.ext"])
    )
  yield* ca("ca")
  yield* ca("other-ca")
  yield* signed("server", "localhost", "2")
  yield* signed("client", "dictator", "2")
  // A negative validity: notAfter is before now, so the certificate is expired from the start.
  yield* signed("expired", "localhost", "-1")
  const f = (n: string) => path.join(dir, n)
  return {
    dir,
    caCert: f("ca.crt"),
    serverCert: f("server.crt"),
    serverKey: f("server.key"),
    clientCert: f("client.crt"),
    clientKey: f("client.key"),
    expiredServerCert: f("expired.crt"),
    expiredServerKey: f("expired.key"),
    otherCaCert: f("other-ca.crt"),
    pem: (file: string) => readFileSync(file, "utf8")
  }
})

/** redis.conf lines of a TLS-only server with these certificates (client certificates optional). */
export const tlsServerLines = (certs: CertFiles, opts: { readonly expired?: boolean; readonly authClients?: "yes" | "no" | "optional" } = {}) => [
  `tls-cert-file ${opts.expired === true ? certs.expiredServerCert : certs.serverCert}`,
  `tls-key-file ${opts.expired === true ? certs.expiredServerKey : certs.serverKey}`,
  `tls-ca-cert-file ${certs.caCert}`,
  `tls-auth-clients ${opts.authClients ?? "optional"}`,
  // Replicas reach their master over TLS too (there is no plain port).
  "tls-replication yes"
]
