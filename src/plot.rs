//! Line charts as PNG: two named curves on one pair of axes, drawn and encoded here (a few hundred bytes
//! of font, deflate from `flate2`): no plotting stack, no system fonts. Training draws `loss.png` and
//! `reward.png` with it, `forge eval --sweep` the scaling curve.

use std::io::Write;

const W: usize = 720;
const H: usize = 420;
const LEFT: usize = 70;
const RIGHT: usize = 20;
const TOP: usize = 40;
const BOTTOM: usize = 50;
const BLUE: [u8; 3] = [31, 119, 180];
const ORANGE: [u8; 3] = [255, 127, 14];
const GREY: [u8; 3] = [200, 200, 200];
const BLACK: [u8; 3] = [0, 0, 0];

struct Canvas {
    pixels: Vec<u8>,
}

impl Canvas {
    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if (0..W as i64).contains(&x) && (0..H as i64).contains(&y) {
            let i = (y as usize * W + x as usize) * 3;
            self.pixels[i..i + 3].copy_from_slice(&c);
        }
    }

    fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: [u8; 3]) {
        let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
        for i in 0..=n {
            let t = i as f64 / n as f64;
            let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
            self.set(x.round() as i64, y.round() as i64, c);
            self.set(x.round() as i64, y.round() as i64 + 1, c);
        }
    }

    /// Text in a 3x5 pixel font scaled by 2, upper case, digits and `. - ( )`.
    fn text(&mut self, x: usize, y: usize, text: &str, c: [u8; 3]) {
        for (k, ch) in text.chars().enumerate() {
            let glyph = glyph(ch.to_ascii_uppercase());
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..3 {
                    if bits & (4 >> col) != 0 {
                        for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                            self.set((x + k * 8 + col * 2 + dx) as i64, (y + row * 2 + dy) as i64, c);
                        }
                    }
                }
            }
        }
    }
}

fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' | 'O' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        'S' => [3, 4, 2, 1, 6],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        '(' => [1, 2, 2, 2, 1],
        ')' => [4, 2, 2, 2, 4],
        'A' => [2, 5, 7, 5, 5],
        'E' => [7, 4, 6, 4, 7],
        'I' => [7, 2, 2, 2, 7],
        'L' => [4, 4, 4, 4, 7],
        'N' => [6, 5, 5, 5, 5],
        'P' => [6, 5, 6, 4, 4],
        'R' => [6, 5, 6, 5, 5],
        'T' => [7, 2, 2, 2, 2],
        'V' => [5, 5, 5, 5, 2],
        'W' => [5, 5, 5, 7, 5],
        'D' => [6, 5, 5, 5, 6],
        'C' => [7, 4, 4, 4, 7],
        'U' => [5, 5, 5, 5, 7],
        'Y' => [5, 5, 2, 2, 2],
        'B' => [6, 5, 6, 5, 6],
        'K' => [5, 5, 6, 5, 5],
        'M' => [5, 7, 7, 5, 5],
        'J' => [1, 1, 1, 5, 7],
        'F' => [7, 4, 6, 4, 4],
        'G' => [7, 4, 5, 5, 7],
        'H' => [5, 5, 7, 5, 5],
        '@' => [7, 5, 7, 4, 7],
        '/' => [1, 1, 2, 4, 4],
        _ => [0; 5],
    }
}

fn label(v: f64) -> String {
    if v.abs() >= 100.0 { format!("{v:.0}") } else { format!("{v:.2}") }
}

/// Two curves (blue, orange) of (x, y) points, with their names and the x axis's, as PNG bytes; points
/// that are not finite are left out.
pub fn curves([(first, train), (second, eval)]: [(&str, Vec<(f64, f64)>); 2], x_label: &str) -> Vec<u8> {
    let mut c = Canvas { pixels: vec![255; W * H * 3] };
    let finite =
        |points: Vec<(f64, f64)>| -> Vec<(f64, f64)> { points.into_iter().filter(|p| p.1.is_finite()).collect() };
    let (train, eval) = (finite(train), finite(eval));
    let all = || train.iter().chain(&eval);
    let (x_max, y_max) = all().fold((1.0f64, f64::MIN), |(x, y), p| (x.max(p.0), y.max(p.1)));
    let y_min = all().fold(f64::MAX, |y, p| y.min(p.1));
    let (y_min, y_max) = if y_min > y_max {
        (0.0, 1.0)
    } else if y_max - y_min < 1e-9 {
        (y_min - 0.5, y_max + 0.5)
    } else {
        (y_min, y_max)
    };
    let (pw, ph) = ((W - LEFT - RIGHT) as f64, (H - TOP - BOTTOM) as f64);
    let at = |(x, y): (f64, f64)| (LEFT as f64 + x / x_max * pw, TOP as f64 + (y_max - y) / (y_max - y_min) * ph);
    for k in 0..=4 {
        let y = y_min + (y_max - y_min) * k as f64 / 4.0;
        let py = at((0.0, y)).1;
        c.line((LEFT as f64, py), ((W - RIGHT) as f64, py), GREY);
        c.text(4, py as usize - 5, &label(y), BLACK);
        let x = x_max * k as f64 / 4.0;
        let px = at((x, y_min)).0;
        c.text((px as usize).saturating_sub(8), H - BOTTOM + 8, &format!("{x:.0}"), BLACK);
    }
    c.line((LEFT as f64, TOP as f64), (LEFT as f64, (H - BOTTOM) as f64), BLACK);
    c.line((LEFT as f64, (H - BOTTOM) as f64), ((W - RIGHT) as f64, (H - BOTTOM) as f64), BLACK);
    for (points, colour) in [(&train, BLUE), (&eval, ORANGE)] {
        for pair in points.windows(2) {
            c.line(at(pair[0]), at(pair[1]), colour);
        }
        if let [only] = points.as_slice() {
            c.line(at(*only), at(*only), colour);
        }
    }
    c.text(LEFT, 12, first, BLUE);
    c.text(LEFT + 8 * first.len() + 30, 12, second, ORANGE);
    c.text((W / 2).saturating_sub(4 * x_label.len()), H - 20, x_label, BLACK);
    encode_png(&c.pixels, W, H)
}

/// An 8-bit RGB PNG.
fn encode_png(rgb: &[u8], w: usize, h: usize) -> Vec<u8> {
    let mut raw = Vec::with_capacity((w * 3 + 1) * h);
    for row in rgb.chunks(w * 3) {
        raw.push(0); // no filter
        raw.extend_from_slice(row);
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&raw).expect("in memory");
    let idat = z.finish().expect("in memory");
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&(w as u32).to_be_bytes());
    ihdr.extend_from_slice(&(h as u32).to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [(b"IHDR", &ihdr), (b"IDAT", &idat), (b"IEND", &Vec::new())] {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&crc.sum().to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// The PNG is well formed: chunk CRCs check, and the image data inflates to the declared size.
    #[test]
    fn png_is_well_formed() {
        let train = (1..=20).map(|s| (s as f64, 3.0 / s as f64)).collect();
        let eval = (1..=4).map(|s| (5.0 * s as f64, 3.5 / (5 * s) as f64)).collect();
        let png = curves([("TRAIN LOSS", train), ("EVAL LOSS", eval)], "STEP");
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let mut at = 8;
        let mut idat = Vec::new();
        while at < png.len() {
            let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
            let (kind, data) = (&png[at + 4..at + 8], &png[at + 8..at + 8 + len]);
            let mut crc = flate2::Crc::new();
            crc.update(kind);
            crc.update(data);
            assert_eq!(crc.sum().to_be_bytes(), png[at + 8 + len..at + 12 + len]);
            if kind == b"IDAT" {
                idat.extend_from_slice(data);
            }
            at += 12 + len;
        }
        let mut raw = Vec::new();
        flate2::read::ZlibDecoder::new(&idat[..]).read_to_end(&mut raw).unwrap();
        assert_eq!(raw.len(), (W * 3 + 1) * H);
        let blue: usize = raw.chunks(W * 3 + 1).map(|row| row[1..].chunks(3).filter(|p| *p == BLUE).count()).sum();
        assert!(blue > 200, "the curve is drawn ({blue} blue pixels)");
    }
}
