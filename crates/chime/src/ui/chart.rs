//! Charts drawn by the server as SVG (no script, no library): stacked bars of deliveries by
//! outcome. Pure functions, tested below.

use maud::{Markup, html};

/// The outcomes a bar stacks, bottom up, with their CSS classes (colours in the stylesheet).
pub const OUTCOMES: [&str; 4] = ["succeeded", "pending", "failed", "skipped"];

/// One bar: counts per outcome (in `OUTCOMES` order) and its label for screen readers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bar {
    pub label: String,
    pub counts: [u32; 4],
}

const W: f64 = 720.0;
const H: f64 = 160.0;

/// Stacked bars scaled to the tallest; each bar has a `<title>` with its numbers.
pub fn stacked(title: &str, bars: &[Bar]) -> Markup {
    let max = bars
        .iter()
        .map(|b| b.counts.iter().sum::<u32>())
        .max()
        .unwrap_or(0)
        .max(1);
    let n = bars.len().max(1) as f64;
    let slot = W / n;
    let width = (slot * 0.8).max(1.0);
    html! {
        figure.chart {
            svg viewBox={ "0 0 " (W) " " (H + 14.0) } role="img" aria-label=(title) preserveAspectRatio="none" {
                title { (title) }
                line x1="0" y1=(H) x2=(W) y2=(H) class="axis" {}
                @for (i, bar) in bars.iter().enumerate() {
                    g {
                        title { (bar.label) ": " (summary(bar)) }
                        @for (j, (y, h)) in stack(bar, max).into_iter().enumerate() {
                            @if h > 0.0 {
                                rect x=(fmt(i as f64 * slot)) y=(fmt(y)) width=(fmt(width)) height=(fmt(h)) class=(OUTCOMES[j]) {}
                            }
                        }
                    }
                }
                text x="0" y=(H + 12.0) class="tick" { (bars.first().map(|b| b.label.as_str()).unwrap_or("")) }
                text x=(W) y=(H + 12.0) class="tick end" { (bars.last().map(|b| b.label.as_str()).unwrap_or("")) }
                text x="2" y="10" class="tick" { "max " (max) }
            }
            figcaption {
                (title) ". "
                @for (j, o) in OUTCOMES.iter().enumerate() {
                    span class={ "key " (o) } { (o) " " (bars.iter().map(|b| b.counts[j]).sum::<u32>()) } " "
                }
            }
        }
    }
}

fn fmt(v: f64) -> String {
    format!("{v:.1}")
}

/// The `(y, height)` of each segment of a bar, bottom up.
fn stack(bar: &Bar, max: u32) -> [(f64, f64); 4] {
    let mut out = [(0.0, 0.0); 4];
    let mut top = H;
    for (j, c) in bar.counts.iter().enumerate() {
        let h = H * f64::from(*c) / f64::from(max);
        top -= h;
        out[j] = (top, h);
    }
    out
}

fn summary(bar: &Bar) -> String {
    OUTCOMES
        .iter()
        .zip(bar.counts)
        .map(|(o, c)| format!("{c} {o}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `q` quantile (0..=1) of sorted values, nearest rank.
pub fn quantile(sorted: &[i64], q: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_stack_to_their_total_scaled_to_the_tallest() {
        let bars = [
            Bar {
                label: "a".into(),
                counts: [2, 0, 2, 0],
            },
            Bar {
                label: "b".into(),
                counts: [1, 0, 0, 0],
            },
        ];
        let s = stack(&bars[0], 4);
        assert_eq!(s[0], (H / 2.0, H / 2.0));
        assert_eq!(s[2], (0.0, H / 2.0));
        let svg = stacked("Deliveries <per> minute", &bars).into_string();
        assert!(svg.contains("<svg"));
        assert!(svg.contains("Deliveries &lt;per&gt; minute"));
        assert!(svg.contains("a: 2 succeeded, 0 pending, 2 failed, 0 skipped"));
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<i64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), Some(50));
        assert_eq!(quantile(&v, 0.99), Some(99));
        assert_eq!(quantile(&v, 1.0), Some(100));
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[7], 0.9), Some(7));
    }
}
