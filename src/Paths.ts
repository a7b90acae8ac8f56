/**
 * Every ZooKeeper path the dictator touches is built here, so the layout of DESIGN.md §3 lives in
 * one place.
 */
export interface ServicePaths {
  readonly service: string
  readonly master: string
  /** Persistent; its data version is bumped in the same transaction that creates a master znode. */
  readonly epoch: string
  readonly members: string
  readonly member: (name: string) => string
  readonly elections: string
  /** Persistent: the replica a graceful handover named, written with the master znode's removal. */
  readonly handover: string
  readonly control: string
  readonly maintenance: string
  /** Persistent: a planned switchover asked by `dictator switchover`, removed when handled. */
  readonly switchover: string
  /** Persistent: the outcome of the last switchover request. */
  readonly switchoverResult: string
}

export const servicePaths = (svcName: string): ServicePaths => {
  const service = `/services/redis/${svcName}`
  const members = `${service}/members`
  return {
    service,
    master: `${service}/master`,
    epoch: `${service}/epoch`,
    members,
    member: (name) => `${members}/${name}`,
    elections: `/elections/redis/${svcName}`,
    handover: `${service}/handover`,
    control: `${service}/control`,
    maintenance: `${service}/control/maintenance`,
    switchover: `${service}/control/switchover`,
    switchoverResult: `${service}/control/switchover-result`
  }
}

export const parentOf = (path: string): string => {
  const i = path.lastIndexOf("/")
  return i <= 0 ? "/" : path.slice(0, i)
}
