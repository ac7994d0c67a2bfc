//! Time and duration: `Time`, `FormatTime`, `Duration`, `Unix`, `Unix*`, `TruncateTime`,
//! calendar parts (`Year` … `Weekday`), duration units (`Hours` … `Nanoseconds`), `Now`.
//!
//! A [`Value::Time`] is UTC nanoseconds since the epoch, so calendar parts and `FormatTime`
//! read it in UTC. `Time` parses the ctime-like directives upstream documents (`%Y-%m-%d`, …)
//! with a numeric offset (`%z`, `%j`, …) applied and a zone abbreviation (`%Z`) read as UTC
//! (what Go does with an abbreviation its local zone does not know). Named locations
//! (`America/New_York`) and locales other than English need a time zone and CLDR database and
//! are not built in: they are an error, not a silent UTC.

use super::{fail, opt_str, req, string_arg};
use crate::{
    error::EvalError,
    func::{Args, Function, Param, ParamType as T},
    value::Value,
};

const NS: i64 = 1_000_000_000;
const VALUE: &[Param] = &[req("value", T::Any)];

pub(super) static FUNCTIONS: &[Function] = &[
    Function::converter(
        "Time",
        &[
            req("target", T::String),
            req("format", T::String),
            super::opt("location", T::String),
            super::opt("locale", T::String),
        ],
        parse_time,
    ),
    Function::converter("FormatTime", &[req("time", T::Any), req("format", T::String)], |a| {
        let t = time_arg(a, 0, "FormatTime")?;
        Ok(Value::String(format_time(t, a.str(1)?)?))
    }),
    Function::converter("Duration", &[req("duration", T::String)], |a| {
        Ok(Value::Duration(parse_duration(string_arg(a, 0, "Duration")?)?))
    }),
    Function::converter("Unix", &[req("seconds", T::Int), super::opt("nanoseconds", T::Int)], |a| {
        let ns = a.get(1).map(Value::expect_int).transpose()?.unwrap_or(0);
        Ok(Value::Time(a.int(0)?.wrapping_mul(NS).wrapping_add(ns)))
    }),
    Function::converter("UnixSeconds", VALUE, |a| Ok(Value::Int(time_arg(a, 0, "UnixSeconds")?.div_euclid(NS)))),
    Function::converter("UnixMilli", VALUE, |a| Ok(Value::Int(time_arg(a, 0, "UnixMilli")?.div_euclid(1_000_000)))),
    Function::converter("UnixMicro", VALUE, |a| Ok(Value::Int(time_arg(a, 0, "UnixMicro")?.div_euclid(1_000)))),
    Function::converter("UnixNano", VALUE, |a| Ok(Value::Int(time_arg(a, 0, "UnixNano")?))),
    Function::converter("TruncateTime", &[req("time", T::Any), req("duration", T::Any)], truncate_time),
    Function::converter("Year", VALUE, |a| part(a, "Year", |c| c.year)),
    Function::converter("Month", VALUE, |a| part(a, "Month", |c| c.month)),
    Function::converter("Day", VALUE, |a| part(a, "Day", |c| c.day)),
    Function::converter("Hour", VALUE, |a| part(a, "Hour", |c| c.hour)),
    Function::converter("Minute", VALUE, |a| part(a, "Minute", |c| c.minute)),
    Function::converter("Second", VALUE, |a| part(a, "Second", |c| c.second)),
    Function::converter("Nanosecond", VALUE, |a| part(a, "Nanosecond", |c| c.nano)),
    Function::converter("Weekday", VALUE, |a| part(a, "Weekday", |c| c.weekday)),
    Function::converter("Hours", VALUE, |a| unit_f64(a, "Hours", 3600 * NS)),
    Function::converter("Minutes", VALUE, |a| unit_f64(a, "Minutes", 60 * NS)),
    Function::converter("Seconds", VALUE, |a| unit_f64(a, "Seconds", NS)),
    Function::converter("Milliseconds", VALUE, |a| Ok(Value::Int(duration_arg(a, 0, "Milliseconds")? / 1_000_000))),
    Function::converter("Microseconds", VALUE, |a| Ok(Value::Int(duration_arg(a, 0, "Microseconds")? / 1_000))),
    Function::converter("Nanoseconds", VALUE, |a| Ok(Value::Int(duration_arg(a, 0, "Nanoseconds")?))),
    Function::converter("Now", &[], |_| {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| EvalError::new(format!("Now: clock before 1970: {e}")))?;
        Ok(Value::Time(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)))
    }),
];

fn time_arg(a: &Args<'_>, i: usize, name: &str) -> Result<i64, EvalError> {
    match a.value(i) {
        Value::Time(t) => Ok(*t),
        other => Err(fail(name, format!("expected time but got {}", other.ty()))),
    }
}

fn duration_arg(a: &Args<'_>, i: usize, name: &str) -> Result<i64, EvalError> {
    match a.value(i) {
        Value::Duration(d) => Ok(*d),
        other => Err(fail(name, format!("expected duration but got {}", other.ty()))),
    }
}

/// A duration in a unit as a float, whole units and remainder converted apart (as Go does,
/// for precision).
fn unit_f64(a: &Args<'_>, name: &str, unit: i64) -> Result<Value, EvalError> {
    let d = duration_arg(a, 0, name)?;
    Ok(Value::Double((d / unit) as f64 + (d % unit) as f64 / unit as f64))
}

/// Go's `Time.Truncate`: rounds down to a multiple of `d` counted from year 1 (not 1970),
/// which matters for durations that do not divide a day.
fn truncate_time(a: &Args<'_>) -> Result<Value, EvalError> {
    let t = time_arg(a, 0, "TruncateTime")?;
    let d = duration_arg(a, 1, "TruncateTime")?;
    if d <= 0 {
        return Ok(Value::Time(t));
    }
    const YEAR1_TO_EPOCH_NS: i128 = 62_135_596_800 * NS as i128;
    let abs = i128::from(t) + YEAR1_TO_EPOCH_NS;
    Ok(Value::Time((abs - abs.rem_euclid(i128::from(d)) - YEAR1_TO_EPOCH_NS) as i64))
}

// --- the calendar ------------------------------------------------------------------------------

/// A UTC time broken into calendar fields.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Civil {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
    nano: i64,
    /// 0 = Sunday.
    weekday: i64,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil(t: i64) -> Civil {
    let secs = t.div_euclid(NS);
    let nano = t.rem_euclid(NS);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil {
        year,
        month,
        day,
        hour: sod / 3600,
        minute: sod % 3600 / 60,
        second: sod % 60,
        nano,
        weekday: (days + 4).rem_euclid(7),
    }
}

fn part(a: &Args<'_>, name: &str, f: fn(&Civil) -> i64) -> Result<Value, EvalError> {
    Ok(Value::Int(f(&civil(time_arg(a, 0, name)?))))
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];

/// The composite directives, expanded before parsing or formatting.
fn expand(format: &str) -> String {
    format
        .replace("%%", "\u{0}")
        .replace("%c", "%a %b %d %H:%M:%S %Y")
        .replace("%D", "%m/%d/%y")
        .replace("%x", "%m/%d/%y")
        .replace("%F", "%Y-%m-%d")
        .replace("%T", "%H:%M:%S")
        .replace("%X", "%H:%M:%S")
        .replace("%r", "%I:%M:%S %p")
        .replace("%R", "%H:%M")
        .replace("%n", "\n")
        .replace("%t", "\t")
}

// --- FormatTime --------------------------------------------------------------------------------

fn format_time(t: i64, format: &str) -> Result<String, EvalError> {
    use std::fmt::Write;
    let c = civil(t);
    let h12 = if c.hour % 12 == 0 { 12 } else { c.hour % 12 };
    let mut out = String::new();
    let mut it = expand(format).chars().collect::<Vec<_>>().into_iter();
    while let Some(ch) = it.next() {
        if ch == '\u{0}' {
            out.push('%');
            continue;
        }
        if ch != '%' {
            out.push(ch);
            continue;
        }
        let d = it.next().ok_or_else(|| fail("FormatTime", "format ends with %"))?;
        let _ = match d {
            'Y' => write!(out, "{:04}", c.year),
            'y' => write!(out, "{:02}", c.year.rem_euclid(100)),
            'm' => write!(out, "{:02}", c.month),
            'o' => write!(out, "{:>2}", c.month),
            'q' => write!(out, "{}", c.month),
            'b' | 'h' => write!(out, "{}", &MONTHS[(c.month - 1) as usize][..3]),
            'B' => write!(out, "{}", MONTHS[(c.month - 1) as usize]),
            'd' => write!(out, "{:02}", c.day),
            'e' => write!(out, "{:>2}", c.day),
            'g' => write!(out, "{}", c.day),
            'a' => write!(out, "{}", &DAYS[c.weekday as usize][..3]),
            'A' => write!(out, "{}", DAYS[c.weekday as usize]),
            'H' => write!(out, "{:02}", c.hour),
            'I' => write!(out, "{h12:02}"),
            'l' => write!(out, "{h12}"),
            'p' => write!(out, "{}", if c.hour < 12 { "AM" } else { "PM" }),
            'P' => write!(out, "{}", if c.hour < 12 { "am" } else { "pm" }),
            'M' => write!(out, "{:02}", c.minute),
            'S' => write!(out, "{:02}", c.second),
            'L' => write!(out, "{:03}", c.nano / 1_000_000),
            'f' => write!(out, "{:06}", c.nano / 1_000),
            's' => write!(out, "{:09}", c.nano),
            'z' => write!(out, "+0000"),
            'Z' => write!(out, "UTC"),
            'i' => write!(out, "+00"),
            'j' => write!(out, "+00:00"),
            'k' => write!(out, "+00:00:00"),
            'w' => write!(out, "+000000"),
            other => return Err(fail("FormatTime", format!("unsupported directive %{other}"))),
        };
    }
    Ok(out)
}

// --- Time (parsing) ----------------------------------------------------------------------------

struct Input<'s> {
    s: &'s str,
    name: &'static str,
}

impl Input<'_> {
    fn err(&self, what: &str) -> EvalError {
        fail(self.name, format!("cannot parse {:?} as {what}", self.s))
    }
    /// 1..=max digits (exactly `min` at least).
    fn num(&mut self, min: usize, max: usize, what: &str) -> Result<i64, EvalError> {
        let n = self.s.bytes().take(max).take_while(u8::is_ascii_digit).count();
        if n < min {
            return Err(self.err(what));
        }
        let v = self.s[..n].parse().map_err(|_| self.err(what))?;
        self.s = &self.s[n..];
        Ok(v)
    }
    /// One of `names` (full, or its first three letters when `short`), case-insensitive;
    /// returns the index.
    fn name_of(&mut self, names: &[&str], short: bool, what: &str) -> Result<i64, EvalError> {
        for (i, n) in names.iter().enumerate() {
            let n = if short { &n[..3] } else { n };
            if self.s.len() >= n.len() && self.s.is_char_boundary(n.len()) && self.s[..n.len()].eq_ignore_ascii_case(n)
            {
                self.s = &self.s[n.len()..];
                return Ok(i as i64);
            }
        }
        Err(self.err(what))
    }
    fn lit(&mut self, c: char) -> Result<(), EvalError> {
        match self.s.strip_prefix(c) {
            Some(rest) => {
                self.s = rest;
                Ok(())
            }
            None => Err(self.err(&format!("{c:?}"))),
        }
    }
    /// `±hh`, then `:mm` / `mm` and `:ss` / `ss` as the directive wants; seconds east of UTC.
    fn offset(&mut self, colon: bool, minutes: bool, seconds: bool) -> Result<i64, EvalError> {
        let sign = match self.s.as_bytes().first() {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => return Err(self.err("a UTC offset")),
        };
        self.s = &self.s[1..];
        let mut secs = self.num(2, 2, "an offset hour")? * 3600;
        if minutes {
            if colon {
                self.lit(':')?;
            }
            secs += self.num(2, 2, "an offset minute")? * 60;
        }
        if seconds {
            if colon {
                self.lit(':')?;
            }
            secs += self.num(2, 2, "an offset second")?;
        }
        Ok(sign * secs)
    }
}

fn parse_time(a: &Args<'_>) -> Result<Value, EvalError> {
    let target = string_arg(a, 0, "Time")?;
    let format = string_arg(a, 1, "Time")?;
    if target.is_empty() || format.is_empty() {
        return Err(fail("Time", "target and format must not be empty"));
    }
    match opt_str(a, 2)?.unwrap_or("") {
        "" | "UTC" | "Etc/UTC" | "GMT" => {}
        other => {
            return Err(fail("Time", format!("location {other:?}: named time zones are not supported yet, only UTC")))
        }
    }
    let locale = opt_str(a, 3)?.unwrap_or("");
    if !(locale.is_empty() || locale == "en" || locale.starts_with("en-") || locale.starts_with("en_")) {
        return Err(fail("Time", format!("locale {locale:?}: only English names are supported yet")));
    }
    let mut inp = Input { s: target, name: "Time" };
    let (mut year, mut month, mut day, mut hour, mut minute, mut second, mut nano) = (0, 1, 1, 0, 0, 0, 0);
    let (mut pm, mut am, mut offset) = (false, false, 0i64);
    let mut chars = expand(format).chars().collect::<Vec<_>>().into_iter();
    while let Some(ch) = chars.next() {
        if ch != '%' {
            inp.lit(if ch == '\u{0}' { '%' } else { ch })?;
            continue;
        }
        let d = chars.next().ok_or_else(|| fail("Time", "format ends with %"))?;
        match d {
            'Y' => year = inp.num(4, 4, "a year")?,
            'y' => {
                let y = inp.num(2, 2, "a two-digit year")?;
                year = if y >= 69 { 1900 + y } else { 2000 + y };
            }
            'm' => month = inp.num(2, 2, "a month")?,
            'o' => {
                inp.s = inp.s.strip_prefix(' ').unwrap_or(inp.s);
                month = inp.num(1, 2, "a month")?;
            }
            'q' => month = inp.num(1, 2, "a month")?,
            'b' | 'h' => month = inp.name_of(&MONTHS, true, "a month name")? + 1,
            'B' => month = inp.name_of(&MONTHS, false, "a month name")? + 1,
            'd' => day = inp.num(2, 2, "a day")?,
            'e' => {
                inp.s = inp.s.strip_prefix(' ').unwrap_or(inp.s);
                day = inp.num(1, 2, "a day")?;
            }
            'g' => day = inp.num(1, 2, "a day")?,
            'a' => {
                inp.name_of(&DAYS, true, "a weekday name")?;
            }
            'A' => {
                inp.name_of(&DAYS, false, "a weekday name")?;
            }
            'H' => hour = inp.num(1, 2, "an hour")?,
            'I' => hour = inp.num(2, 2, "an hour")?,
            'l' => hour = inp.num(1, 2, "an hour")?,
            'p' | 'P' => match inp.name_of(&["AM", "PM"], false, "AM or PM")? {
                0 => am = true,
                _ => pm = true,
            },
            'M' => minute = inp.num(2, 2, "a minute")?,
            'S' => second = inp.num(2, 2, "a second")?,
            'L' => nano = inp.num(3, 3, "milliseconds")? * 1_000_000,
            'f' => nano = inp.num(6, 6, "microseconds")? * 1_000,
            's' => nano = inp.num(9, 9, "nanoseconds")?,
            'z' => offset = inp.offset(false, true, false)?,
            'i' => offset = inp.offset(false, false, false)?,
            'j' => offset = inp.offset(true, true, false)?,
            'k' => offset = inp.offset(true, true, true)?,
            'w' => offset = inp.offset(false, true, true)?,
            'Z' => {
                let n = inp.s.bytes().take_while(u8::is_ascii_alphabetic).count();
                if !(3..=5).contains(&n) {
                    return Err(inp.err("a time zone abbreviation"));
                }
                inp.s = &inp.s[n..];
            }
            other => return Err(fail("Time", format!("unsupported directive %{other}"))),
        }
    }
    if !inp.s.is_empty() {
        return Err(fail("Time", format!("extra text {:?} after the format", inp.s)));
    }
    if pm && hour < 12 {
        hour += 12;
    } else if am && hour == 12 {
        hour = 0;
    }
    if !(1..=12).contains(&month) {
        return Err(fail("Time", "month out of range"));
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err(fail("Time", "day out of range"));
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err(fail("Time", "hour, minute or second out of range"));
    }
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    // i64 nanoseconds since 1970 end in 2262 (and begin in 1677): beyond is an error, not a
    // wrapped time.
    secs.checked_mul(NS)
        .and_then(|n| n.checked_add(nano))
        .map(Value::Time)
        .ok_or_else(|| fail("Time", "time out of range: nanoseconds since 1970 fit years 1677 to 2262"))
}

// --- Duration ----------------------------------------------------------------------------------

/// Go's `time.ParseDuration`: `[-+]` then one or more `<decimal><unit>` with units `ns`, `us`
/// (`µs`), `ms`, `s`, `m`, `h`; a bare `0` is zero.
fn parse_duration(s: &str) -> Result<i64, EvalError> {
    let bad = || fail("Duration", format!("time: invalid duration {s:?}"));
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(r) = rest.strip_prefix('.') {
            let n = r.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &r[..n];
            rest = &r[n..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad());
        }
        let unit_len = rest.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(rest.len());
        let unit: u128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(fail("Duration", format!("time: missing unit in duration {s:?}"))),
            u => return Err(fail("Duration", format!("time: unknown unit {u:?} in duration {s:?}"))),
        };
        rest = &rest[unit_len..];
        let whole: u128 = if int_part.is_empty() { 0 } else { int_part.parse().map_err(|_| bad())? };
        total = total.saturating_add(whole.saturating_mul(unit));
        if !frac_part.is_empty() {
            let digits = &frac_part[..frac_part.len().min(30)];
            let scale = 10u128.pow(digits.len() as u32);
            let f: u128 = digits.parse().map_err(|_| bad())?;
            total = total.saturating_add(f.saturating_mul(unit) / scale);
        }
        if total > 1u128 << 63 {
            return Err(bad());
        }
    }
    if neg {
        Ok((total as i128).wrapping_neg() as i64)
    } else {
        i64::try_from(total).map_err(|_| bad())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{check, eval, s};

    /// Fuzz finding F2: years past 2262 overflowed i64 nanoseconds (wrapping in release).
    #[test]
    fn times_beyond_i64_nanoseconds_are_an_error() {
        check(&[
            (r#"Time("4048-01-02", "%Y-%m-%d")"#, Err("time out of range")),
            (r#"Time("1600-01-02", "%Y-%m-%d")"#, Err("time out of range")),
            (r#"Time("2262-01-01", "%Y-%m-%d")"#, Ok(Time(9_214_646_400 * NS))),
        ]);
    }
    use super::{civil, days_from_civil, NS};
    use crate::Value::{self, Double, Duration, Int, Time};

    /// 2023-02-04T00:00:00Z.
    const FEB4: i64 = 1_675_468_800 * NS;

    #[test]
    fn calendar_round_trip() {
        for days in [-106_000, -1, 0, 59, 11_016, 19_392, 106_000] {
            let c = civil(days * 86_400 * NS);
            assert_eq!(days_from_civil(c.year, c.month, c.day), days, "{c:?}");
        }
        assert_eq!(civil(0).weekday, 4, "1970-01-01 was a Thursday");
    }

    #[test]
    fn parse_time_table() {
        check(&[
            (r#"Time("02/04/2023", "%m/%d/%Y")"#, Ok(Time(FEB4))),
            (r#"Time("Feb 15, 2023", "%b %d, %Y")"#, Ok(Time(FEB4 + 11 * 86_400 * NS))),
            (r#"Time("2023-05-26 12:34:56 HST", "%Y-%m-%d %H:%M:%S %Z")"#, Ok(Time(1_685_104_496 * NS))),
            (r#"Time("1986-10-01T00:17:33 MST", "%Y-%m-%dT%H:%M:%S %Z")"#, Ok(Time(528_509_853 * NS))),
            (r#"Time("2012-11-01T22:08:41+0000 EST", "%Y-%m-%dT%H:%M:%S%z %Z")"#, Ok(Time(1_351_807_721 * NS))),
            (r#"Time("2012-11-01T22:08:41-0100", "%Y-%m-%dT%H:%M:%S%z")"#, Ok(Time(1_351_811_321 * NS))),
            (r#"Time("2012-11-01T22:08:41+01:30", "%FT%T%j")"#, Ok(Time(1_351_802_321 * NS))),
            (
                r#"Time("Sat Feb  4 02:55:02 pm 2023", "%a %h %e %r %Y")"#,
                Ok(Time(FEB4 + (14 * 3600 + 55 * 60 + 2) * NS)),
            ),
            (r#"Time("12:00:00 AM 1/2/23", "%I:%M:%S %p %q/%g/%y")"#, Ok(Time(1_672_617_600 * NS))),
            (r#"Time("2023-02-04 00:00:00.123456", "%Y-%m-%d %H:%M:%S.%f")"#, Ok(Time(FEB4 + 123_456_000))),
            (r#"Time("Saturday February 4 2023", "%A %B %g %Y")"#, Ok(Time(FEB4))),
            (r#"Time("02/30/2023", "%m/%d/%Y")"#, Err("day out of range")),
            (r#"Time("2/4/2023", "%m/%d/%Y")"#, Err("cannot parse")),
            (r#"Time("02/04/2023x", "%m/%d/%Y")"#, Err("extra text")),
            (r#"Time("2023", "%Q")"#, Err("unsupported directive")),
            (r#"Time("2023-05-26 12:34:56", "%Y-%m-%d %H:%M:%S", "America/New_York")"#, Err("named time zones")),
            (r#"Time("mercoledì set 4 2024", "%A %h %e %Y", "", "it")"#, Err("only English")),
            (r#"Time(log.attributes["none"], "%Y")"#, Err("expected string but got nil")),
        ]);
    }

    #[test]
    fn format_time_table() {
        check(&[
            (r#"FormatTime(Time("02/04/2023", "%m/%d/%Y"), "%A %h %e %Y")"#, Ok(s("Saturday Feb  4 2023"))),
            (r#"FormatTime(Unix(1675528502, 7000000), "%b %d %Y %H:%M:%S.%L")"#, Ok(s("Feb 04 2023 16:35:02.007"))),
            (
                r#"FormatTime(Unix(1675528502), "%c|%D|%F|%R|%r|%I|%l|%P|%o|%q|%g|%y")"#,
                Ok(s("Sat Feb 04 16:35:02 2023|02/04/23|2023-02-04|16:35|04:35:02 PM|04|4|pm| 2|2|4|23")),
            ),
            (
                r#"FormatTime(Unix(0, 1), "%f %s %z %Z %i %j %k %w 100%%")"#,
                Ok(s("000000 000000001 +0000 UTC +00 +00:00 +00:00:00 +000000 100%")),
            ),
            (r#"FormatTime(Unix(0), "%Q")"#, Err("unsupported directive")),
            (r#"FormatTime("2023", "%Y")"#, Err("expected time but got string")),
        ]);
    }

    #[test]
    fn duration_table() {
        let h = 3600 * NS;
        check(&[
            (r#"Duration("3s")"#, Ok(Duration(3 * NS))),
            (r#"Duration("333ms")"#, Ok(Duration(333_000_000))),
            (r#"Duration("1000000h")"#, Ok(Duration(1_000_000 * h))),
            (r#"Duration("1h30m")"#, Ok(Duration(h + h / 2))),
            (r#"Duration("-1.5h")"#, Ok(Duration(-(h + h / 2)))),
            (r#"Duration("1µs2us3ns")"#, Ok(Duration(3_003))),
            (r#"Duration(".5s")"#, Ok(Duration(NS / 2))),
            (r#"Duration("0")"#, Ok(Duration(0))),
            (r#"Duration("3000000h")"#, Err("invalid duration")),
            (r#"Duration("10")"#, Err("missing unit")),
            (r#"Duration("1d")"#, Err("unknown unit")),
            (r#"Duration("")"#, Err("invalid duration")),
            (r#"Duration(log.attributes["none"])"#, Err("expected string but got nil")),
            (r#"Hours(Duration("90m"))"#, Ok(Double(1.5))),
            (r#"Minutes(Duration("1h"))"#, Ok(Double(60.0))),
            (r#"Seconds(Duration("1h"))"#, Ok(Double(3600.0))),
            (r#"Milliseconds(Duration("1h"))"#, Ok(Int(3_600_000))),
            (r#"Microseconds(Duration("1h"))"#, Ok(Int(3_600_000_000))),
            (r#"Nanoseconds(Duration("1h"))"#, Ok(Int(3_600_000_000_000))),
            (r#"Hours(1)"#, Err("expected duration but got int")),
        ]);
    }

    #[test]
    fn unix_parts_truncate_table() {
        // 2023-02-04T16:35:02.5Z, a Saturday.
        let t = r#"Unix(1675528502, 500000000)"#;
        let row = |f: &str| format!("{f}({t})");
        let rows = [
            (row("Year"), Int(2023)),
            (row("Month"), Int(2)),
            (row("Day"), Int(4)),
            (row("Hour"), Int(16)),
            (row("Minute"), Int(35)),
            (row("Second"), Int(2)),
            (row("Nanosecond"), Int(500_000_000)),
            (row("Weekday"), Int(6)),
            (row("UnixSeconds"), Int(1_675_528_502)),
            (row("UnixMilli"), Int(1_675_528_502_500)),
            (row("UnixMicro"), Int(1_675_528_502_500_000)),
            (row("UnixNano"), Int(1_675_528_502_500_000_000)),
            (format!(r#"TruncateTime({t}, Duration("1s"))"#), Time(1_675_528_502 * NS)),
            (format!(r#"TruncateTime({t}, Duration("1h"))"#), Time(1_675_526_400 * NS)),
            (format!(r#"TruncateTime({t}, Duration("168h"))"#), Time(1_675_036_800 * NS)),
            (format!(r#"TruncateTime({t}, Duration("0s"))"#), Time(1_675_528_502_500_000_000)),
            ("UnixSeconds(Unix(-1, 500000000))".to_owned(), Int(-1)),
            ("Year(Unix(-1))".to_owned(), Int(1969)),
        ];
        for (expr, want) in rows {
            check(&[(expr.as_str(), Ok(want))]);
        }
        check(&[
            (r#"Year("2023")"#, Err("expected time but got string")),
            (r#"TruncateTime(Unix(0), 1)"#, Err("expected duration")),
        ]);
    }

    #[test]
    fn now_is_current() {
        let Ok(Value::Int(y)) = eval("Year(Now())") else { panic!() };
        assert!(y >= 2025, "{y}");
    }
}
