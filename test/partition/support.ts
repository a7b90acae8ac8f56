/**
 * Whether the partition suite runs here. It needs root, iproute2 and nftables (test/run.sh
 * installs the packages; CI runs as root). Elsewhere it is skipped with one line saying why —
 * except under CI=true, where a missing capability must fail the run, not hide it: the suite then
 * runs and fails with the same reason.
 */
export const requireNetns = (problem: string | undefined): boolean => {
  if (problem === undefined) return false
  if (process.env.CI === "true") return false
  // One line for the whole suite: its files share this process (singleFork), not their modules.
  if (process.env.PARTITION_SKIP_SAID !== "1") {
    process.env.PARTITION_SKIP_SAID = "1"
    console.log(`[partition] skipped: ${problem}`)
  }
  return true
}
