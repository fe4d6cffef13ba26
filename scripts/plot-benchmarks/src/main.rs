//! Draws verify time against the number of stored keys (1k, 10k, 100k, 1M)
//! for keygate and the `prefixed-api-key` peer, with the HMAC floor, from
//! the JSON criterion writes for `cargo bench --bench peers`.
//!
//! ```console
//! cargo bench --bench peers
//! cargo run --release --manifest-path scripts/plot-benchmarks/Cargo.toml -- \
//!     target/criterion verify_vs_keys.png
//! ```
//!
//! A crate of its own, outside keygate's dependency graph: plotters' font
//! features would otherwise reach the plotters inside criterion.
//!
//! Arguments: criterion's output folder (default `target/criterion`, or
//! `$CARGO_TARGET_DIR/criterion`) and the PNG to write (default
//! `verify_vs_keys.png`). Labels are drawn with a TrueType font read from
//! `KEYGATE_PLOT_FONT` or a usual system location (DejaVu Sans, Liberation
//! Sans).

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

const SIZES: [u64; 4] = [1_000, 10_000, 100_000, 1_000_000];

const FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// Criterion's point estimate of the mean, in nanoseconds, for one benchmark.
fn mean_ns(root: &Path, id: &str) -> Option<f64> {
    let file = root.join(id).join("new").join("estimates.json");
    let text = std::fs::read_to_string(file).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["mean"]["point_estimate"].as_f64()
}

fn series(root: &Path, name: &str) -> Vec<(u64, f64)> {
    SIZES
        .iter()
        .filter_map(|&n| Some((n, mean_ns(root, &format!("peers_verify/{name}/{n}"))?)))
        .collect()
}

fn load_font() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::var("KEYGATE_PLOT_FONT")
        .ok()
        .or_else(|| {
            FONTS
                .iter()
                .find(|p| Path::new(p).exists())
                .map(|p| p.to_string())
        })
        .ok_or("no TrueType font found: set KEYGATE_PLOT_FONT to a .ttf file")?;
    let bytes: &'static [u8] = Box::leak(std::fs::read(&path)?.into_boxed_slice());
    register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| format!("{path} is not a font plotters can read"))?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let root = args.next().map(PathBuf::from).unwrap_or_else(|| {
        let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
        Path::new(&target).join("criterion")
    });
    let out = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| "verify_vs_keys.png".into());
    let keygate = series(&root, "keygate");
    let peer = series(&root, "prefixed_api_key");
    if keygate.is_empty() && peer.is_empty() {
        return Err(format!(
            "no peers_verify results under {}: run `cargo bench --bench peers` first",
            root.display()
        )
        .into());
    }
    let floor = mean_ns(&root, "peers_verify/hmac_floor");
    load_font()?;

    let top = keygate
        .iter()
        .chain(&peer)
        .map(|&(_, ns)| ns)
        .chain(floor)
        .fold(0.0_f64, f64::max)
        * 1.15;
    let area = BitMapBackend::new(&out, (900, 560)).into_drawing_area();
    area.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&area)
        .caption(
            "verify a valid key, by keys stored (one criterion run)",
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d((500u64..2_000_000u64).log_scale(), 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("keys stored")
        .y_desc("time per verify (ns)")
        .x_label_formatter(&|n| match *n {
            n if n >= 1_000_000 => format!("{}M", n / 1_000_000),
            n if n >= 1_000 => format!("{}k", n / 1_000),
            n => n.to_string(),
        })
        .label_style(("sans-serif", 15))
        .draw()?;
    for (data, name, color) in [
        (&keygate, "keygate (memory store)", BLUE),
        (&peer, "prefixed-api-key (HashMap)", RED),
    ] {
        if data.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(data.iter().copied(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart.draw_series(
            data.iter()
                .map(|&(n, ns)| Circle::new((n, ns), 4, color.filled())),
        )?;
    }
    if let Some(floor) = floor {
        let green = RGBColor(0, 140, 0);
        chart
            .draw_series(LineSeries::new(
                [(500, floor), (2_000_000, floor)],
                green.stroke_width(2),
            ))?
            .label("one HMAC-SHA256 (floor)")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], green));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()?;
    area.present()?;
    println!("wrote {}", out.display());
    Ok(())
}
