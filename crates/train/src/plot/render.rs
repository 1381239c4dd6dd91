//! Drawing a [`Figure`] with plotters: a PNG (with an embedded font) and an SVG.

use super::{Figure, Panel, PlotError, Stroke};
use crate::fsutil;
use image::ImageEncoder;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use std::path::Path;
use std::sync::Once;

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

static FONT: Once = Once::new();

fn ensure_font() {
    // PNGs need a font to draw text with; one is embedded so plots look the same everywhere.
    FONT.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../../assets/DejaVuSans.ttf");
        // Registration only fails on a malformed font, which the embedded one is not.
        let _ = register_font("sans-serif", FontStyle::Normal, bytes);
    });
}

fn bounds(p: &Panel) -> ((f64, f64), (f64, f64)) {
    let pts = p.series.iter().flat_map(|s| s.points.iter()).filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if !x0.is_finite() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    let pad = 0.05 * (y1 - y0);
    let y = p.y_range.unwrap_or((y0 - pad, y1 + pad));
    ((x0, x1), y)
}

/// A tick label: no decimals beyond what the axis span needs, thousands as `k`.
fn tick(v: f64, span: f64) -> String {
    if span >= 5000.0 && v.abs() >= 1000.0 {
        let k = v / 1000.0;
        if (k - k.round()).abs() < 1e-6 {
            format!("{}k", k.round() as i64)
        } else {
            format!("{k:.1}k")
        }
    } else if span >= 10.0 {
        format!("{}", v.round() as i64)
    } else if span >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// Series of at most this many points get a marker at each.
const MARKED_POINTS: usize = 12;

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, plotters::coord::Shift>, fig: &Figure) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let areas = root.split_evenly((1, fig.panels.len().max(1)));
    for (area, panel) in areas.iter().zip(&fig.panels) {
        let ((x0, x1), (y0, y1)) = bounds(panel);
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| e.to_string())?;
        let x_fmt = |x: &f64| tick(*x, x1 - x0);
        let y_fmt = |y: &f64| tick(*y, y1 - y0);
        chart
            .configure_mesh()
            .x_desc(&panel.x_label)
            .y_desc(&panel.y_label)
            .x_labels(6)
            .y_labels(8)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .light_line_style(WHITE.mix(0.0))
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| e.to_string())?;
        for s in &panel.series {
            let color = PALETTE[s.color % PALETTE.len()];
            let style = ShapeStyle::from(&color).stroke_width(2);
            let pts: Vec<(f64, f64)> =
                s.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
            // Points of a short series (a table's rows, one of them alone) are marked: a line
            // through a single point draws nothing.
            if pts.len() <= MARKED_POINTS {
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 3, ShapeStyle::from(&color).filled())))
                    .map_err(|e| e.to_string())?;
            }
            let anno = match s.stroke {
                Stroke::Solid => chart.draw_series(LineSeries::new(pts, style)).map_err(|e| e.to_string())?,
                Stroke::Dashed => {
                    chart.draw_series(DashedLineSeries::new(pts, 6, 4, style)).map_err(|e| e.to_string())?
                }
            };
            let dashed = s.stroke == Stroke::Dashed;
            anno.label(&s.label).legend(move |(x, y)| {
                if dashed {
                    PathElement::new(vec![(x, y), (x + 7, y)], ShapeStyle::from(&color).stroke_width(2))
                } else {
                    PathElement::new(vec![(x, y), (x + 18, y)], ShapeStyle::from(&color).stroke_width(2))
                }
            });
        }
        if panel.series.iter().any(|s| !s.label.is_empty()) {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.3))
                .label_font(("sans-serif", 13))
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(|e| e.to_string())?;
        }
    }
    root.present().map_err(|e| e.to_string())
}

/// Writes `<stem>.png` and `<stem>.svg` (each atomically).
pub(super) fn save(fig: &Figure, stem: &Path) -> Result<(), PlotError> {
    ensure_font();
    let (w, h) = (560 * fig.panels.len().max(1) as u32, 420);
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    let mut pixels = vec![0u8; (w * h * 3) as usize];
    draw(BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area(), fig)
        .map_err(|reason| PlotError::Draw { path: png.clone(), reason })?;
    let mut encoded = Vec::new();
    image::codecs::png::PngEncoder::new(&mut encoded)
        .write_image(&pixels, w, h, image::ExtendedColorType::Rgb8)
        .map_err(|e| PlotError::Draw { path: png.clone(), reason: e.to_string() })?;
    fsutil::write_atomic(&png, &encoded)?;
    let mut text = String::new();
    draw(SVGBackend::with_string(&mut text, (w, h)).into_drawing_area(), fig)
        .map_err(|reason| PlotError::Draw { path: svg.clone(), reason })?;
    fsutil::write_atomic(&svg, text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::Series;

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(tick(11000.0, 11700.0), "11k");
        assert_eq!(tick(2500.0, 11700.0), "2.5k");
        assert_eq!(tick(40.0, 60.0), "40");
        assert_eq!(tick(0.25, 0.5), "0.250");
    }

    #[test]
    fn writes_png_and_svg() {
        let dir = std::env::temp_dir().join(format!("resnet-plot-{}", std::process::id()));
        let fig = Figure {
            panels: vec![Panel {
                title: "ResNet-20".into(),
                x_label: "iterations".into(),
                y_label: "error (%)".into(),
                series: vec![
                    Series {
                        label: "train".into(),
                        points: vec![(0.0, 80.0), (100.0, 40.0)],
                        stroke: Stroke::Dashed,
                        color: 0,
                    },
                    Series {
                        label: "test".into(),
                        points: vec![(0.0, 85.0), (100.0, 45.0)],
                        stroke: Stroke::Solid,
                        color: 0,
                    },
                ],
                y_range: None,
            }],
        };
        save(&fig, &dir.join("curves")).unwrap();
        let png = std::fs::read(dir.join("curves.png")).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        let decoded = image::load_from_memory(&png).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (560, 420));
        let svg = std::fs::read_to_string(dir.join("curves.svg")).unwrap();
        assert!(svg.contains("<svg") && svg.contains("ResNet-20"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_series_of_one_point_is_drawn() {
        let dir = std::env::temp_dir().join(format!("resnet-plot-point-{}", std::process::id()));
        let series = |label: &str, points: Vec<(f64, f64)>, color| Series {
            label: label.into(),
            points,
            stroke: Stroke::Solid,
            color,
        };
        let fig = Figure {
            panels: vec![Panel {
                title: "depth".into(),
                x_label: "layers".into(),
                y_label: "test error (%)".into(),
                // Depth tables have one run of another tool at a single depth.
                series: vec![
                    series("ours", vec![(20.0, 14.8), (56.0, 14.4)], 0),
                    series("other", vec![(56.0, 20.3)], 1),
                ],
                y_range: None,
            }],
        };
        save(&fig, &dir.join("depth")).unwrap();
        let svg = std::fs::read_to_string(dir.join("depth.svg")).unwrap();
        assert!(svg.contains("<circle"), "no marker drawn for the points");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
