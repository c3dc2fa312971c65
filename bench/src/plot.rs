//! Latency distributions as an SVG: one curve per operation, latency (log) against
//! percentile on a "nines" axis, so p50, p99 and p99.9 are evenly spaced.

use std::path::Path;

use plotters::prelude::*;

use crate::report::Results;

const PALETTE: [RGBColor; 16] = [
    RGBColor(0, 0, 0),
    RGBColor(0, 0, 128),
    RGBColor(128, 0, 0),
    RGBColor(0, 128, 128),
    RGBColor(255, 0, 255),
    RGBColor(128, 128, 0),
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Nines from 0 (p0) to 4 (p99.99).
const MAX_NINES: f64 = 4.0;

fn quantile(nines: f64) -> f64 {
    1.0 - 10f64.powf(-nines)
}

pub fn write_svg(results: &Results, path: &Path) -> Result<(), String> {
    let mut curves = Vec::new();
    let mut highest: f64 = 1.0;
    for (name, op) in &results.ops {
        if name.starts_with("seed_") || op.count == 0 {
            continue;
        }
        let h = op.histogram()?;
        let points: Vec<(f64, f64)> = (0..=40)
            .map(|step| {
                let nines = step as f64 / 10.0;
                let ms = h.value_at_quantile(quantile(nines)) as f64 / 1000.0;
                (nines, ms.max(0.01))
            })
            .collect();
        highest = points.iter().fold(highest, |m, p| m.max(p.1));
        curves.push((name.clone(), points));
    }
    let title = format!(
        "BBS latency by operation: {} backend, {} LRPs, {} cells",
        results.backend, results.config["lrps"], results.config["cells"]
    );
    let root = SVGBackend::new(path, (1100, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..MAX_NINES, (0.01f64..highest * 2.0).log_scale())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms, log scale)")
        .x_labels(5)
        .x_label_formatter(&|nines| {
            let percent = 100.0 * quantile(*nines);
            format!("p{}", (percent * 100.0).round() / 100.0)
        })
        .y_label_formatter(&|ms| format!("{ms}"))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, (name, points)) in curves.into_iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
