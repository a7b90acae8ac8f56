/**
 * The few node-zookeeper-client (1.1.x) internals the driver (ZooKeeperClient.ts) needs, in one
 * place; test/ZooKeeperClient.test.ts fails if a new version of the library changes any of them.
 */
import type * as net from "node:net"
import type zookeeper from "node-zookeeper-client"

interface ConnectionManagerInternals {
  readonly socket?: net.Socket
  /** Bytes of a reply not complete yet. The library keeps them across sockets. */
  pendingBuffer: Buffer | null
  connect: () => void
  onSocketData: (buffer: Buffer) => void
}

interface TransactionInternals {
  readonly ops: Array<{ version?: number }>
}

export const connectionManagerOf = (client: zookeeper.Client): ConnectionManagerInternals =>
  (client as unknown as { readonly connectionManager: ConnectionManagerInternals }).connectionManager

/** "host:port" of the server the client's socket is connected to now, if any. */
export const currentServer = (client: zookeeper.Client): string | undefined => {
  const s = connectionManagerOf(client).socket
  return s?.remoteAddress === undefined ? undefined : `${s.remoteAddress}:${s.remotePort}`
}

/**
 * Closes the client's connection without closing its session. The library then fails the
 * requests in flight with CONNECTION_LOSS, reports DISCONNECTED and connects to the next server
 * of its list with the same session id and password, as the Java client does: the server answers
 * with the session (still alive on the quorum) or with "expired". This is the only way to leave
 * a silent server: the library has no read timeout of its own.
 */
export const dropConnection = (client: zookeeper.Client): void => {
  connectionManagerOf(client).socket?.destroy()
}

/**
 * Two flaws of the library that turn a connection dropped mid-reply into a crashed daemon:
 * - the bytes of a partial reply are kept when the socket closes and read as the start of the
 *   next socket's first reply (a new server's handshake), so everything after is garbage;
 * - what it throws while parsing a reply (e.g. "Unknown code: …" for a garbage error code) is
 *   thrown from a socket event: an uncaught exception.
 * Each new socket starts with no pending bytes, and a reply that cannot be parsed drops the
 * connection, which the library reconnects like any other (`onParseError` tells why).
 */
export const harden = (client: zookeeper.Client, onParseError: (e: unknown) => void): void => {
  const cm = connectionManagerOf(client)
  const connect = cm.connect.bind(cm)
  cm.connect = () => {
    cm.pendingBuffer = null
    connect()
  }
  const onSocketData = cm.onSocketData.bind(cm)
  cm.onSocketData = (buffer) => {
    try {
      onSocketData(buffer)
    } catch (e) {
      cm.pendingBuffer = null
      onParseError(e)
      cm.socket?.destroy()
    }
  }
}

/**
 * Adds a versioned op to a transaction with exactly `version`: the library's check/setData/remove
 * write `version || -1`, so version 0 would silently become "any version".
 */
export const withExactVersion = (tx: zookeeper.Transaction, version: number): zookeeper.Transaction => {
  const ops = (tx as unknown as TransactionInternals).ops
  ops[ops.length - 1]!.version = version
  return tx
}
