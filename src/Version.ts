/** Kept equal to package.json's version (checked by a test). */
export const VERSION = "0.2.0"
