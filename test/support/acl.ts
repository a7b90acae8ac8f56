/** The least ACL of a dictator's Redis user, exactly as README.md documents it (tests use exactly this). */
export const LEAST_ACL = "+ping +info +replicaof +config|set +client|pause +client|unpause +client|list +client|kill +psync +replconf"
