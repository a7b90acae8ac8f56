/** Prometheus text parsed by an independent parser (parse-prometheus-text-format), for assertions. */
import parse from "parse-prometheus-text-format"

export interface Scrape {
  readonly names: ReadonlySet<string>
  /** The value of `name` whose labels include `labels`; NaN-valued samples as NaN; undefined when absent. */
  readonly value: (name: string, labels?: Readonly<Record<string, string>>) => number | undefined
  /** A histogram's sample count (its +Inf bucket; this parser keeps no labels on histograms). */
  readonly count: (name: string) => number | undefined
}

export const scrape = (text: string): Scrape => {
  const families = parse(text)
  const find = (name: string, labels: Readonly<Record<string, string>>) =>
    families
      .find((f) => f.name === name)
      ?.metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v))
  return {
    names: new Set(families.map((f) => f.name)),
    value: (name, labels = {}) => {
      const m = find(name, labels)
      return m?.value === undefined ? undefined : Number(m.value)
    },
    count: (name) => {
      const inf = families.find((f) => f.name === name)?.metrics[0]?.buckets?.["+Inf"]
      return inf === undefined ? undefined : Number(inf)
    }
  }
}
