//! The console's figures, drawn server-side as SVG with `plotters`.
//!
//! They read the same JSON the APIs return (the report and the time series,
//! serialised), so a figure shows exactly the API's numbers, and a lift the
//! report gains later (any `*_lift` object of a variant row) is drawn
//! without a change here.

use plotters::prelude::*;
use serde_json::Value;

/// Width of every figure in SVG user units; the page scales it to fit.
const WIDTH: u32 = 900;

/// One row of the forest plot: a variant's relative lift on one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct ForestRow {
    /// "variant · metric".
    pub label: String,
    /// Relative lift, percent.
    pub relative: f64,
    /// 95% interval of the relative lift, percent.
    pub low: f64,
    /// 95% interval of the relative lift, percent.
    pub high: f64,
}

/// A readable metric name from a report key (`conversion_lift` →
/// `conversion`, `cuped_revenue_lift` → `cuped revenue`).
pub fn lift_label(key: &str) -> String {
    key.strip_suffix("_lift").unwrap_or(key).replace('_', " ")
}

/// Every `*_lift` object of every variant row of a report (JSON), in row
/// order then key order. Lifts without finite figures are left out.
pub fn forest_rows(report: &Value) -> Vec<ForestRow> {
    let mut rows = Vec::new();
    let Some(variants) = report.get("variants").and_then(Value::as_array) else {
        return rows;
    };
    for v in variants {
        let name = v.get("variant").and_then(Value::as_str).unwrap_or("?");
        let Some(obj) = v.as_object() else { continue };
        for (key, lift) in obj {
            if !key.ends_with("_lift") || !lift.is_object() {
                continue;
            }
            let f = |k: &str| lift.get(k).and_then(Value::as_f64);
            if let (Some(r), Some(lo), Some(hi)) =
                (f("relative"), f("relative_ci_low"), f("relative_ci_high"))
            {
                if r.is_finite() && lo.is_finite() && hi.is_finite() {
                    rows.push(ForestRow {
                        label: format!("{name} · {}", lift_label(key)),
                        relative: r * 100.0,
                        low: lo * 100.0,
                        high: hi * 100.0,
                    });
                }
            }
        }
    }
    rows
}

fn err(e: impl std::fmt::Display) -> String {
    format!("plot: {e}")
}

/// Padded axis range around `values` (always including zero, the line of
/// no effect).
fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (0.0f64, 0.0f64);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    let pad = ((hi - lo) * 0.08).max(1.0);
    (lo - pad, hi + pad)
}

/// The forest plot of a report: each variant's relative lifts with their
/// 95% intervals against the control.
pub fn forest_svg(report: &Value) -> Result<String, String> {
    let rows = forest_rows(report);
    let n = rows.len().max(1);
    let height = 120 + 28 * n as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (lo, hi) = range(rows.iter().flat_map(|r| [r.low, r.high]));
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Lift against the control (95% interval)",
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(230)
            .build_cartesian_2d(lo..hi, -0.5f64..(n as f64 - 0.5))
            .map_err(err)?;
        let labels: Vec<String> = rows.iter().map(|r| r.label.clone()).collect();
        chart
            .configure_mesh()
            .x_desc("relative lift (%)")
            .y_desc("variant · metric")
            .y_labels(n)
            .y_label_formatter(&|y| row_label(&labels, *y))
            .x_label_formatter(&|x| format!("{x:.1}"))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(0.0, -0.5), (0.0, n as f64 - 0.5)],
                BLACK.mix(0.5).stroke_width(1),
            )))
            .map_err(err)?;
        for (k, r) in rows.iter().enumerate() {
            let y = (n - 1 - k) as f64;
            let colour = if r.low > 0.0 {
                RGBColor(22, 128, 60)
            } else if r.high < 0.0 {
                RGBColor(190, 40, 40)
            } else {
                RGBColor(60, 60, 60)
            };
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(r.low, y), (r.high, y)],
                    colour.stroke_width(2),
                )))
                .map_err(err)?;
            chart
                .draw_series(std::iter::once(Circle::new(
                    (r.relative, y),
                    5,
                    colour.filled(),
                )))
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// The Offers page's figure: per offer and channel shown at least once
/// (rows of `GET /v1/offers/stats`' `channels`), the accept rate (%) as a
/// bar, and the share shown by exploration (%) as a dot.
pub fn offers_svg(stats: &Value) -> Result<String, String> {
    let rows: Vec<(String, f64, f64)> = stats
        .get("channels")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|c| {
                    let rate = c.get("accept_rate")?.as_f64()?;
                    let explored = c.get("explored_share")?.as_f64()?;
                    let label = format!(
                        "{} · {}",
                        c.get("offer_id")?.as_str()?,
                        c.get("channel")?.as_str()?
                    );
                    Some((label, rate * 100.0, explored * 100.0))
                })
                .collect()
        })
        .unwrap_or_default();
    let n = rows.len().max(1);
    let height = 120 + 22 * n as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Accept rate (bar) and share shown by exploration (dot)",
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(230)
            .build_cartesian_2d(0f64..100f64, -0.5f64..(n as f64 - 0.5))
            .map_err(err)?;
        let labels: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
        chart
            .configure_mesh()
            .x_desc("share of offers shown (%)")
            .y_desc("offer · channel")
            .y_labels(n)
            .y_label_formatter(&|y| row_label(&labels, *y))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(err)?;
        for (k, (_, rate, explored)) in rows.iter().enumerate() {
            let y = (n - 1 - k) as f64;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(0.0, y - 0.35), (*rate, y + 0.35)],
                    RGBColor(20, 50, 92).filled(),
                )))
                .map_err(err)?;
            chart
                .draw_series(std::iter::once(Circle::new(
                    (*explored, y),
                    4,
                    RGBColor(214, 120, 0).filled(),
                )))
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// One variant's cumulative conversion lift over the days of a time series.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesPoint {
    /// Day index (0 = the first day in the series).
    pub day: usize,
    /// Relative conversion lift, percent, with its 95% interval.
    pub relative: f64,
    /// Lower end of the interval, percent.
    pub low: f64,
    /// Upper end of the interval, percent.
    pub high: f64,
    /// Always-valid p-value as of that day.
    pub p_value: Option<f64>,
}

/// Per non-control variant, its points (days where it has a lift).
pub fn series(timeseries: &Value) -> (Vec<String>, Vec<(String, Vec<SeriesPoint>)>) {
    let mut days = Vec::new();
    let mut out: Vec<(String, Vec<SeriesPoint>)> = Vec::new();
    let Some(list) = timeseries.get("days").and_then(Value::as_array) else {
        return (days, out);
    };
    for (i, d) in list.iter().enumerate() {
        days.push(
            d.get("day")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        );
        for v in d
            .get("variants")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = v.get("variant").and_then(Value::as_str).unwrap_or("?");
            let lift = v.get("conversion_lift");
            let f = |k: &str| lift.and_then(|l| l.get(k)).and_then(Value::as_f64);
            let (Some(r), Some(lo), Some(hi)) =
                (f("relative"), f("relative_ci_low"), f("relative_ci_high"))
            else {
                continue;
            };
            let point = SeriesPoint {
                day: i,
                relative: r * 100.0,
                low: lo * 100.0,
                high: hi * 100.0,
                p_value: v.get("sequential_p_value").and_then(Value::as_f64),
            };
            match out.iter_mut().find(|(n, _)| n == name) {
                Some((_, pts)) => pts.push(point),
                None => out.push((name.to_string(), vec![point])),
            }
        }
    }
    (days, out)
}

const PALETTE: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// Results over time: each variant's cumulative relative conversion lift
/// with its 95% interval band (top) and its always-valid p-value (bottom).
pub fn timeseries_svg(timeseries: &Value) -> Result<String, String> {
    let (days, variants) = series(timeseries);
    let last = days.len().saturating_sub(1).max(1) as f64;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 620)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (top, bottom) = root.split_vertically(360);
        let day_label = |x: &f64| -> String {
            let i = x.round();
            if (x - i).abs() > 1e-6 || i < 0.0 {
                return String::new();
            }
            days.get(i as usize).cloned().unwrap_or_default()
        };
        let (lo, hi) = range(
            variants
                .iter()
                .flat_map(|(_, p)| p.iter().flat_map(|q| [q.low, q.high])),
        );
        let mut chart = ChartBuilder::on(&top)
            .caption(
                "Cumulative conversion lift (95% interval band)",
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..last, lo..hi)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("day (UTC)")
            .y_desc("relative lift (%)")
            .x_labels(days.len().clamp(2, 8))
            .x_label_formatter(&day_label)
            .y_label_formatter(&|y| format!("{y:.1}"))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(0.0, 0.0), (last, 0.0)],
                BLACK.mix(0.5),
            )))
            .map_err(err)?;
        for (k, (name, pts)) in variants.iter().enumerate() {
            let c = PALETTE[k % PALETTE.len()];
            let mut band: Vec<(f64, f64)> = pts.iter().map(|p| (p.day as f64, p.high)).collect();
            band.extend(pts.iter().rev().map(|p| (p.day as f64, p.low)));
            chart
                .draw_series(std::iter::once(Polygon::new(band, c.mix(0.18).filled())))
                .map_err(err)?;
            chart
                .draw_series(LineSeries::new(
                    pts.iter().map(|p| (p.day as f64, p.relative)),
                    c.stroke_width(2),
                ))
                .map_err(err)?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c));
            // Each day's point and interval also as a mark, so a series of
            // one day still shows.
            chart
                .draw_series(pts.iter().map(|p| {
                    PathElement::new(vec![(p.day as f64, p.low), (p.day as f64, p.high)], c)
                }))
                .map_err(err)?;
            chart
                .draw_series(
                    pts.iter()
                        .map(|p| Circle::new((p.day as f64, p.relative), 4, c.filled())),
                )
                .map_err(err)?;
        }
        if !variants.is_empty() {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK.mix(0.3))
                .draw()
                .map_err(err)?;
        }
        let mut p_chart = ChartBuilder::on(&bottom)
            .caption("Always-valid p-value", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..last, 0f64..1f64)
            .map_err(err)?;
        p_chart
            .configure_mesh()
            .x_desc("day (UTC)")
            .y_desc("p-value (0–1)")
            .x_labels(days.len().clamp(2, 8))
            .x_label_formatter(&day_label)
            .y_label_formatter(&|y| format!("{y:.2}"))
            .draw()
            .map_err(err)?;
        p_chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(0.0, 0.05), (last, 0.05)],
                RGBColor(190, 40, 40).mix(0.6),
            )))
            .map_err(err)?;
        for (k, (_, pts)) in variants.iter().enumerate() {
            let c = PALETTE[k % PALETTE.len()];
            p_chart
                .draw_series(LineSeries::new(
                    pts.iter()
                        .filter_map(|p| p.p_value.map(|v| (p.day as f64, v))),
                    c.stroke_width(2),
                ))
                .map_err(err)?;
            p_chart
                .draw_series(pts.iter().filter_map(|p| {
                    p.p_value
                        .map(|v| Circle::new((p.day as f64, v), 4, c.filled()))
                }))
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// The label of the row drawn at `y` on a chart whose rows are labelled
/// top to bottom by `labels` (row 0 at the top); empty between rows.
fn row_label(labels: &[String], y: f64) -> String {
    let i = y.round();
    if (y - i).abs() > 1e-6 || i < 0.0 {
        return String::new();
    }
    let idx = labels.len() as isize - 1 - i as isize;
    usize::try_from(idx)
        .ok()
        .and_then(|k| labels.get(k).cloned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_lift_of_a_row_is_a_forest_row() {
        let report = json!({"variants": [
            {"variant": "control", "conversion_lift": null},
            {"variant": "b", "conversion_lift": {"relative": 0.1, "relative_ci_low": -0.05, "relative_ci_high": 0.25},
             "value_lift": {"relative": 0.2, "relative_ci_low": 0.1, "relative_ci_high": 0.3},
             "members": 10}
        ]});
        let rows = forest_rows(&report);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].label, "b · conversion");
        assert_eq!(rows[1].label, "b · value");
        assert!((rows[1].low - 10.0).abs() < 1e-9);
        let svg = forest_svg(&report).unwrap();
        assert!(svg.contains("relative lift (%)") && svg.contains("b · value"));
    }

    #[test]
    fn an_empty_series_still_draws_labelled_axes() {
        let svg = timeseries_svg(&json!({"days": []})).unwrap();
        assert!(svg.contains("day (UTC)") && svg.contains("p-value (0–1)"));
    }
}
