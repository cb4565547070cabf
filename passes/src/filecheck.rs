//! A small FileCheck (LLVM's lit habit) for pass tests.
//!
//! Directives, read from `// CHECK...:` lines of a test file, matched in
//! order against the output text:
//! - `CHECK: pat` — `pat` occurs at or after the current line;
//! - `CHECK-NEXT: pat` — `pat` occurs on the line right after the last match;
//! - `CHECK-SAME: pat` — `pat` occurs on the same line as the last match,
//!   after it;
//! - `CHECK-NOT: pat` — `pat` does not occur between the last match and the
//!   next positive match (or the end);
//! - `CHECK-COUNT-n: pat` — `pat` occurs on `n` consecutive matching lines
//!   from the current position (each after the previous).
//!
//! Patterns are literal text, except `{{re}}` (a regex) and `[[NAME:re]]`
//! (capture into NAME) / `[[NAME]]` (what NAME captured), so SSA numbers
//! need not be hard-coded: `[[Q:%[0-9]+]] = linear` … `split([[Q]])`.

use regex::Regex;
use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    Check,
    Next,
    Same,
    Not,
    Count(usize),
}

#[derive(Clone, Debug)]
pub struct Directive {
    pub kind: Kind,
    pub pattern: String,
    /// 1-based line of the directive in the test file.
    pub line: usize,
}

/// The CHECK directives of a test file.
pub fn directives(test: &str) -> Result<Vec<Directive>, String> {
    let mut out = Vec::new();
    for (i, l) in test.lines().enumerate() {
        let t = l.trim_start();
        let Some(rest) = t.strip_prefix("//") else { continue };
        let rest = rest.trim_start();
        let Some(after) = rest.strip_prefix("CHECK") else { continue };
        let (kind, pat) = if let Some(p) = after.strip_prefix(':') {
            (Kind::Check, p)
        } else if let Some(p) = after.strip_prefix("-NEXT:") {
            (Kind::Next, p)
        } else if let Some(p) = after.strip_prefix("-SAME:") {
            (Kind::Same, p)
        } else if let Some(p) = after.strip_prefix("-NOT:") {
            (Kind::Not, p)
        } else if let Some(c) = after.strip_prefix("-COUNT-") {
            let (n, p) = c.split_once(':').ok_or_else(|| format!("line {}: CHECK-COUNT-n needs a `:`", i + 1))?;
            let n: usize = n.parse().map_err(|_| format!("line {}: bad count `{n}`", i + 1))?;
            (Kind::Count(n), p)
        } else {
            return Err(format!("line {}: unknown directive `CHECK{}`", i + 1, after.split(':').next().unwrap_or("")));
        };
        out.push(Directive { kind, pattern: pat.trim().to_string(), line: i + 1 });
    }
    Ok(out)
}

/// Compile a pattern to a regex given the current variable bindings;
/// returns the regex and the names it captures.
fn compile(pat: &str, vars: &HashMap<String, String>) -> Result<(Regex, Vec<String>), String> {
    let mut re = String::new();
    let mut caps = Vec::new();
    let mut rest = pat;
    while !rest.is_empty() {
        let a = rest.find("{{");
        let b = rest.find("[[");
        let next = match (a, b) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        };
        let Some(at) = next else {
            re.push_str(&regex::escape(rest));
            break;
        };
        re.push_str(&regex::escape(&rest[..at]));
        rest = &rest[at..];
        if let Some(r) = rest.strip_prefix("{{") {
            let end = r.find("}}").ok_or_else(|| format!("unclosed `{{{{` in `{pat}`"))?;
            re.push_str(&format!("(?:{})", &r[..end]));
            rest = &r[end + 2..];
        } else if let Some(r) = rest.strip_prefix("[[") {
            let end = r.find("]]").ok_or_else(|| format!("unclosed `[[` in `{pat}`"))?;
            let inner = &r[..end];
            match inner.split_once(':') {
                Some((name, sub)) => {
                    re.push_str(&format!("(?P<{name}>{sub})"));
                    caps.push(name.to_string());
                }
                None => {
                    let v = vars.get(inner).ok_or_else(|| format!("variable `{inner}` used before it is defined in `{pat}`"))?;
                    re.push_str(&regex::escape(v));
                }
            }
            rest = &r[end + 2..];
        }
    }
    let rx = Regex::new(&re).map_err(|e| format!("bad pattern `{pat}`: {e}"))?;
    Ok((rx, caps))
}

/// Check `output` against the directives of `test`. Errors say which
/// directive failed and show the neighbourhood.
pub fn check(test: &str, output: &str) -> Result<(), String> {
    let dirs = directives(test)?;
    if dirs.is_empty() {
        return Err("test has no CHECK directives".into());
    }
    let lines: Vec<&str> = output.lines().collect();
    let mut vars: HashMap<String, String> = HashMap::new();
    // Position: (line index, column) just after the last match.
    let mut pos: (usize, usize) = (0, 0);
    let mut have_match = false;
    let mut pending_not: Vec<&Directive> = Vec::new();
    let fail = |d: &Directive, msg: &str, from: usize| {
        let ctx: Vec<String> = lines.iter().enumerate().skip(from.saturating_sub(1)).take(6).map(|(i, l)| format!("  {:>4}| {l}", i + 1)).collect();
        format!("CHECK on test line {} (`{}`): {msg}\noutput near line {}:\n{}", d.line, d.pattern, from + 1, ctx.join("\n"))
    };
    let find_from = |rx: &Regex, start: (usize, usize)| -> Option<(usize, usize, regex::Captures<'_>)> {
        for (i, l) in lines.iter().enumerate().skip(start.0) {
            let col = if i == start.0 { start.1 } else { 0 };
            if col > l.len() {
                continue;
            }
            if let Some(c) = rx.captures_at(l, col) {
                let end = c.get(0).map(|m| m.end()).unwrap_or(col);
                return Some((i, end, c));
            }
        }
        None
    };
    let bind = |vars: &mut HashMap<String, String>, names: &[String], c: &regex::Captures<'_>| {
        for n in names {
            if let Some(m) = c.name(n) {
                vars.insert(n.clone(), m.as_str().to_string());
            }
        }
    };
    let check_nots = |nots: &[&Directive], vars: &HashMap<String, String>, from: (usize, usize), to: (usize, usize)| -> Result<(), String> {
        for d in nots {
            let (rx, _) = compile(&d.pattern, vars)?;
            for (i, l) in lines.iter().enumerate().take(to.0 + 1).skip(from.0) {
                let s = if i == from.0 { from.1.min(l.len()) } else { 0 };
                let e = if i == to.0 { to.1.min(l.len()) } else { l.len() };
                if s <= e && rx.is_match(&l[s..e]) {
                    return Err(fail(d, "matched, but must not", i));
                }
            }
        }
        Ok(())
    };
    for d in &dirs {
        if d.kind == Kind::Not {
            pending_not.push(d);
            continue;
        }
        let (rx, names) = compile(&d.pattern, &vars)?;
        let start = pos;
        match &d.kind {
            Kind::Check => {
                let (i, end, c) = find_from(&rx, pos).ok_or_else(|| fail(d, "no match", pos.0))?;
                bind(&mut vars, &names, &c);
                check_nots(&pending_not, &vars, start, (i, end))?;
                pos = (i, end);
            }
            Kind::Next | Kind::Same => {
                if !have_match {
                    return Err(fail(d, "needs a previous match", 0));
                }
                let line = if d.kind == Kind::Next { pos.0 + 1 } else { pos.0 };
                let col = if d.kind == Kind::Next { 0 } else { pos.1 };
                let l = lines.get(line).ok_or_else(|| fail(d, "output ends before this line", line))?;
                let c = rx.captures_at(l, col.min(l.len())).ok_or_else(|| fail(d, "not on the expected line", line))?;
                let end = c.get(0).map(|m| m.end()).unwrap_or(col);
                bind(&mut vars, &names, &c);
                check_nots(&pending_not, &vars, start, (line, end))?;
                pos = (line, end);
            }
            Kind::Count(n) => {
                for k in 0..*n {
                    let (i, end, c) = find_from(&rx, pos).ok_or_else(|| fail(d, &format!("only {k} of {n} matches"), pos.0))?;
                    bind(&mut vars, &names, &c);
                    pos = (i, end);
                }
                check_nots(&pending_not, &vars, start, pos)?;
            }
            Kind::Not => unreachable!("handled above"),
        }
        pending_not.clear();
        have_match = true;
    }
    let end = (lines.len().saturating_sub(1), usize::MAX);
    check_nots(&pending_not, &vars, pos, end)
}

#[cfg(test)]
mod tests {
    use super::check;

    const OUT: &str = "%0 = input \"x\" : f32[4]\n%1 = exp(%0) : f32[4]\n%2 = add(%1, %1) : f32[4]\noutput \"y\" = %2\n";

    #[test]
    fn positive_directives_and_variables() {
        check("// CHECK: [[X:%[0-9]+]] = input\n// CHECK-NEXT: [[E:%[0-9]+]] = exp([[X]])\n// CHECK-SAME: f32[4]\n// CHECK: add([[E]], [[E]])", OUT).unwrap();
        check("// CHECK-COUNT-2: : f32[4]\n// CHECK: output", OUT).unwrap();
    }

    #[test]
    fn failures_are_reported() {
        assert!(check("// CHECK: mul", OUT).unwrap_err().contains("no match"));
        assert!(check("// CHECK: input\n// CHECK-NEXT: add", OUT).unwrap_err().contains("expected line"));
        assert!(check("// CHECK: input\n// CHECK-NOT: exp\n// CHECK: add", OUT).unwrap_err().contains("must not"));
        assert!(check("// CHECK-NOT: exp", OUT).is_err());
        check("// CHECK-NOT: mul", OUT).unwrap();
        assert!(check("// CHECK: [[Y]]", OUT).unwrap_err().contains("before it is defined"));
        assert!(check("no directives", OUT).is_err());
        assert!(check("// CHECK-COUNT-5: f32", OUT).unwrap_err().contains("of 5"));
    }
}
