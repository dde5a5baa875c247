//! The latency-by-percentile plot (PNG, plotters' bitmap backend).
//!
//! The x axis is "number of nines" (`-log10(1 - q)`: 0 = p0, 1 = p90,
//! 2 = p99, 3 = p99.9 …) as HdrHistogram plots do, the y axis latency in µs
//! on a log scale. Text needs a font; plotters is built with `ab_glyph` (no
//! fontconfig), and the font is read from a TTF file at run time. With no
//! font the plot is drawn without text rather than failing.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

/// Errors drawing the plot.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("drawing {path}: {why}")]
    Draw { path: String, why: String },
}

/// TTF files tried when `--font` is not given (Debian's DejaVu first).
const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Register a font for plotters; returns whether text can be drawn.
pub fn load_font(explicit: Option<&Path>) -> bool {
    let mut paths: Vec<PathBuf> = explicit.map(Path::to_path_buf).into_iter().collect();
    paths.extend(FONT_CANDIDATES.iter().map(PathBuf::from));
    for p in paths {
        if let Ok(bytes) = std::fs::read(&p) {
            // plotters keeps fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
    }
    false
}

/// x position of quantile `q`: the number of nines, capped at 5.
pub fn nines(q: f64) -> f64 {
    if q >= 0.99999 {
        5.0
    } else {
        -(1.0 - q).log10()
    }
}

/// One series: a label and `[quantile, µs]` points.
pub struct Series<'a> {
    pub label: &'a str,
    pub curve: &'a [[f64; 2]],
}

/// Draw `series` into `out` (PNG, 1100 × 650).
pub fn percentiles(
    out: &Path,
    title: &str,
    series: &[Series<'_>],
    text: bool,
) -> Result<(), PlotError> {
    let err = |why: String| PlotError::Draw {
        path: out.display().to_string(),
        why,
    };
    let max_us = series
        .iter()
        .flat_map(|s| s.curve.iter().map(|p| p[1]))
        .fold(1.0f64, f64::max);
    let min_us = series
        .iter()
        .flat_map(|s| s.curve.iter().map(|p| p[1]))
        .filter(|v| *v > 0.0)
        .fold(max_us, f64::min)
        .max(1.0);
    let root = BitMapBackend::new(out, (1100, 650)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if text {
        builder
            .caption(title, ("sans-serif", 24))
            .x_label_area_size(45)
            .y_label_area_size(70);
    }
    let mut chart = builder
        .build_cartesian_2d(0f64..5f64, ((min_us * 0.8)..(max_us * 1.25)).log_scale())
        .map_err(|e| err(e.to_string()))?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("percentile")
            .y_desc("latency (µs)")
            .x_labels(6)
            .x_label_formatter(&|x| match x.round() as i64 {
                0 => "p0".into(),
                1 => "p90".into(),
                2 => "p99".into(),
                3 => "p99.9".into(),
                4 => "p99.99".into(),
                _ => "p99.999".into(),
            })
            .y_label_formatter(&|y| format!("{y:.0}"));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(|e| err(e.to_string()))?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> = s
            .curve
            .iter()
            .map(|p| (nines(p[0]), p[1].max(min_us * 0.8)))
            .collect();
        let drawn = chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| err(e.to_string()))?;
        if text {
            drawn.label(s.label).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        }
    }
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| err(e.to_string()))?;
    }
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_axis() {
        assert_eq!(nines(0.0), 0.0);
        assert!((nines(0.99) - 2.0).abs() < 1e-9);
        assert!((nines(0.999) - 3.0).abs() < 1e-9);
        assert_eq!(nines(1.0), 5.0);
    }

    fn curve(scale: f64) -> Vec<[f64; 2]> {
        crate::hist::PLOT_QUANTILES
            .iter()
            .map(|&q| [q, scale * (1.0 + 10.0 * q * q)])
            .collect()
    }

    fn draw(name: &str, text: bool) -> Vec<u8> {
        let out = std::env::temp_dir().join(format!("ztgate-lt-{name}-{}.png", std::process::id()));
        let a = curve(100.0);
        let b = curve(300.0);
        percentiles(
            &out,
            "test",
            &[
                Series {
                    label: "a",
                    curve: &a,
                },
                Series {
                    label: "b",
                    curve: &b,
                },
            ],
            text,
        )
        .unwrap();
        std::fs::read(&out).unwrap()
    }

    #[test]
    fn renders_a_png_without_any_font() {
        let png = draw("nofont", false);
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert!(png.len() > 1000);
    }

    #[test]
    fn renders_with_text_when_a_font_is_found() {
        // On machines without DejaVu this checks the no-text path again.
        let text = load_font(None);
        let png = draw("font", text);
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    }
}
