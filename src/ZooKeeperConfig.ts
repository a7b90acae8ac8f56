/**
 * The ZooKeeper client's options from the decoded config file: one place for the daemon and the
 * operator CLI (`dictator list --config=PATH` …), so every zk_* setting reaches both.
 */
import type { DictatorConfigData, ZkCredentials } from "./Config.js"
import type { ZooKeeperOptions } from "./ZooKeeperClient.js"

/** `credentials`: zk_auth as read from its file or variable (resolveZkAuth). */
export const zooKeeperOptions = (config: DictatorConfigData, credentials?: ZkCredentials): ZooKeeperOptions => ({
  hosts: config.zk_hosts,
  sessionTimeout: `${config.zk_session_timeout_ms} millis`,
  connectTimeout: `${config.zk_connect_timeout_ms} millis`,
  requestTimeout: `${Math.max(config.zk_session_timeout_ms, 2000)} millis`,
  silenceLimit: `${config.fence_after_ms} millis`,
  ...(credentials === undefined ? {} : { auth: credentials }),
  ...(config.zk_chroot === undefined ? {} : { chroot: config.zk_chroot })
})
