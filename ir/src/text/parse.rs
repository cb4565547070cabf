//! The parser: text (grammar in the module doc of [`super`]) back to graphs
//! and programs.
//!
//! Statements are read line by line with a [`Cur`]. Nodes are rebuilt with
//! [`Graph::add_unchecked`] from the printed result types, and the finished
//! graph goes through [`verify_graph`], so a type that does not follow from
//! the operands is reported, located at the line of the node that is wrong.

use super::attrs::{self, static_dims, Attr, Attrs, Kind};
use super::cursor::{error_at, Cur, PResult};
use super::lexical::quote;
use crate::error::IrError;
use crate::graph::{Annotation, Graph, Role, ValueRef};
use crate::op::{Literal, Op, TensorType};
use crate::program::{CachePolicy, Control, DecodeSpec, DenoiseSpec, Guidance, Program, SigmaSchedule, Stage, TeaCacheSpec};
use crate::verify::verify_graph;
use petgraph::stable_graph::NodeIndex;
use std::collections::{BTreeMap, HashMap};

/// Parse `graph { … }`.
pub fn parse_graph(src: &str) -> Result<Graph, IrError> {
    let source = Source::new(src);
    let mut lines = Lines { src: &source, next: 0 };
    let mut cur = lines.next_stmt().ok_or_else(|| lines.eof("`graph {`"))?;
    cur.keyword("graph")?;
    cur.expect('{')?;
    cur.expect_end()?;
    let g = parse_body(&mut lines, cur.line, "graph {")?;
    if let Some(mut cur) = lines.next_stmt() {
        return Err(cur.expected("end of input after the graph"));
    }
    Ok(g)
}

/// Parse a program: `meta`, `stage` and `control` statements.
pub fn parse_program(src: &str) -> Result<Program, IrError> {
    let source = Source::new(src);
    let mut lines = Lines { src: &source, next: 0 };
    let mut metadata = BTreeMap::new();
    let mut meta_lines: HashMap<String, usize> = HashMap::new();
    let mut stages = Vec::new();
    let mut stage_lines: HashMap<String, usize> = HashMap::new();
    let mut control: Option<(Control, usize, usize)> = None;
    while let Some(mut cur) = lines.next_stmt() {
        let top = "`meta`, `stage` or `control`";
        let (kw, at) = cur.ident(top)?;
        match kw.as_str() {
            "meta" => {
                let key_at = cur.pos();
                let key = cur.string("a quoted metadata key")?;
                cur.expect('=')?;
                let value = cur.string("a quoted metadata value")?;
                cur.expect_end()?;
                if let Some(first) = meta_lines.get(&key) {
                    return Err(cur.err_at(key_at, format!("duplicate metadata key {} (first at line {first})", quote(&key))));
                }
                meta_lines.insert(key.clone(), cur.line);
                metadata.insert(key, value);
            }
            "stage" => {
                let name_at = cur.pos();
                let name = cur.string("a quoted stage name")?;
                if let Some(first) = stage_lines.get(&name) {
                    return Err(cur.err_at(name_at, format!("duplicate stage {} (first at line {first})", quote(&name))));
                }
                cur.expect('{')?;
                cur.expect_end()?;
                stage_lines.insert(name.clone(), cur.line);
                let graph = parse_body(&mut lines, cur.line, &format!("stage {} {{", quote(&name)))?;
                stages.push(Stage { name, graph });
            }
            "control" => {
                if let Some((_, first, _)) = &control {
                    return Err(cur.err_at(at, format!("second `control` statement (the first is at line {first})")));
                }
                let (kind, kind_at) = cur.ident("a control kind (`forward`, `denoise` or `decode`)")?;
                match kind.as_str() {
                    "forward" => {
                        let stage_at = cur.pos();
                        let stage = cur.string("a quoted stage name")?;
                        cur.expect_end()?;
                        control = Some((Control::Forward { stage }, cur.line, stage_at));
                    }
                    "denoise" => {
                        let (line, body_at) = (cur.line, cur.pos());
                        let spec = parse_denoise(&mut lines, &mut cur)?;
                        control = Some((Control::Denoise(spec), line, body_at));
                    }
                    "decode" => {
                        let (line, at) = (cur.line, cur.pos());
                        let spec = parse_decode(&mut lines, &mut cur)?;
                        control = Some((Control::Decode(spec), line, at));
                    }
                    _ => return Err(cur.err_at(kind_at, format!("unknown control `{kind}` (expected `forward`, `denoise` or `decode`)"))),
                }
            }
            _ => return Err(cur.err_at(at, format!("expected {top}, found `{kw}`"))),
        }
    }
    let Some((control, line, at)) = control else { return Err(lines.eof("a `control` statement")) };
    for name in control.stage_names() {
        if !stage_lines.contains_key(name) {
            return Err(error_at(line, at + 1, format!("control refers to unknown stage {}", quote(name))));
        }
    }
    Ok(Program { stages, control, metadata })
}

/// Fields of `control denoise` that appear at most once.
const DENOISE_SINGLE: [&str; 10] = ["scheduler", "steps", "sigmas", "latents", "timestep", "timestep_i64", "prediction", "guidance", "cfg_batch", "teacache"];

/// `"a" -> "b"`.
fn name_pair(cur: &mut Cur<'_>, what: &str) -> PResult<(String, String)> {
    let a = cur.string(&format!("the quoted {what} before `->`"))?;
    cur.expect('-')?;
    cur.expect('>')?;
    let b = cur.string(&format!("the quoted {what} after `->`"))?;
    Ok((a, b))
}

/// The rest of `control denoise "body" {` and its field lines up to `}`
/// (grammar in the module doc of [`super`]).
fn parse_denoise(lines: &mut Lines<'_>, cur: &mut Cur<'_>) -> PResult<DenoiseSpec> {
    let body = cur.string("the quoted name of the body stage")?;
    cur.expect('{')?;
    cur.expect_end()?;
    let open_line = cur.line;
    let mut seen: HashMap<String, usize> = HashMap::new();
    let (mut scheduler, mut steps, mut sigmas, mut latents, mut timestep, mut prediction) = (None, None, None, None, None, None);
    let (mut guidance, mut cfg_batch, mut teacache) = (None, None, None);
    let (mut inputs, mut negative, mut residuals) = (Vec::new(), Vec::new(), Vec::new());
    let (mut negative_at, mut residual_at) = (None, None);
    let mut timestep_i64 = false;
    let (close_line, close_at) = loop {
        let Some(mut c) = lines.next_stmt() else {
            return Err(lines.eof(&format!("`}}` closing `control denoise` from line {open_line}")));
        };
        let at = c.pos();
        if c.eat('}') {
            c.expect_end()?;
            break (c.line, at);
        }
        let (kw, kw_at) = c.ident("a denoise field (`scheduler`, `steps`, `sigmas`, `latents`, `timestep`, `timestep_i64`, `prediction`, `input`, `guidance`, `negative`, `cfg_batch`, `teacache`, `residual`) or `}`")?;
        if DENOISE_SINGLE.contains(&kw.as_str()) {
            if let Some(first) = seen.get(&kw) {
                return Err(c.err_at(kw_at, format!("duplicate denoise field `{kw}` (first at line {first})")));
            }
            seen.insert(kw.clone(), c.line);
        }
        match kw.as_str() {
            "scheduler" => scheduler = Some(c.string("the quoted scheduler_config.json text")?),
            "steps" => {
                let n_at = c.pos();
                let n = c.uint("a number of steps")?;
                if n == 0 {
                    return Err(c.err_at(n_at, "a denoise loop has at least one step"));
                }
                steps = Some(n);
            }
            "sigmas" => {
                let (w, w_at) = c.ident("`scheduler` or `flow_linspace`")?;
                sigmas = Some(match w.as_str() {
                    "scheduler" => SigmaSchedule::Scheduler,
                    "flow_linspace" => SigmaSchedule::FlowLinspace,
                    _ => return Err(c.err_at(w_at, format!("unknown sigma schedule `{w}` (expected `scheduler` or `flow_linspace`)"))),
                });
            }
            "latents" => latents = Some(name_pair(&mut c, "latents name")?),
            "timestep" => {
                let name = c.string("the quoted timestep input")?;
                c.expect('/')?;
                timestep = Some((name, c.float("the timestep divisor")?));
            }
            "prediction" => prediction = Some(c.string("the quoted prediction output")?),
            "timestep_i64" => timestep_i64 = true,
            "input" => inputs.push(name_pair(&mut c, "input name")?),
            "negative" => {
                negative_at.get_or_insert((c.line, kw_at));
                negative.push(name_pair(&mut c, "input name")?);
            }
            "guidance" => {
                let (w, w_at) = c.ident("`none`, `true_cfg`, `distilled` or `class_cfg`")?;
                guidance = Some(match w.as_str() {
                    "none" => Guidance::None,
                    "true_cfg" => Guidance::TrueCfg { scale: c.float("the guidance scale")?, negative: Vec::new() },
                    "distilled" => {
                        let input = c.string("the quoted guidance input")?;
                        Guidance::Distilled { input, scale: c.float("the guidance scale")? }
                    }
                    "class_cfg" => {
                        let scale = c.float("the guidance scale")?;
                        let labels = c.string("the quoted class-label input")?;
                        c.keyword("null")?;
                        let null_class = c.uint("the null class")? as i64;
                        Guidance::ClassCfg { scale, labels, null_class }
                    }
                    _ => return Err(c.err_at(w_at, format!("unknown guidance `{w}` (expected `none`, `true_cfg`, `distilled` or `class_cfg`)"))),
                });
            }
            "cfg_batch" => cfg_batch = Some(c.list(|c| c.string("a quoted input name"))?),
            "teacache" => {
                let threshold = c.float("the teacache threshold")?;
                if c.peek() != Some('[') {
                    return Err(c.expected("the teacache coefficients like `[1.0, 0.5]`"));
                }
                let coefficients = c.list(|c| c.float("a coefficient"))?;
                let stage = |c: &mut Cur<'_>, kw: &str| -> PResult<String> {
                    c.keyword(kw)?;
                    c.string(&format!("the quoted `{kw}` name"))
                };
                let (pre, blocks, post) = (stage(&mut c, "pre")?, stage(&mut c, "blocks")?, stage(&mut c, "post")?);
                let modulated = stage(&mut c, "modulated")?;
                teacache = Some(TeaCacheSpec { threshold, coefficients, pre, blocks, post, modulated, residuals: Vec::new() });
            }
            "residual" => {
                residual_at.get_or_insert((c.line, kw_at));
                residuals.push(name_pair(&mut c, "stream name")?);
            }
            _ => return Err(c.err_at(kw_at, format!("unknown denoise field `{kw}`"))),
        }
        c.expect_end()?;
    };
    let missing = |what: &str| error_at(close_line, close_at + 1, format!("`control denoise` is missing `{what}`"));
    let scheduler_config = scheduler.ok_or_else(|| missing("scheduler"))?;
    let steps = steps.ok_or_else(|| missing("steps"))?;
    let sigmas = sigmas.ok_or_else(|| missing("sigmas"))?;
    let (latents, latent_input) = latents.ok_or_else(|| missing("latents"))?;
    let (timestep_input, timestep_div) = timestep.ok_or_else(|| missing("timestep"))?;
    let prediction_output = prediction.ok_or_else(|| missing("prediction"))?;
    let mut guidance = guidance.ok_or_else(|| missing("guidance"))?;
    match (&mut guidance, negative_at) {
        (Guidance::TrueCfg { negative: n, .. }, _) => *n = negative,
        (_, Some((line, at))) => return Err(error_at(line, at + 1, "`negative` inputs need `guidance true_cfg`")),
        _ => {}
    }
    let cache = match (teacache, residual_at) {
        (Some(mut t), _) => {
            t.residuals = residuals;
            Some(CachePolicy::TeaCache(t))
        }
        (None, Some((line, at))) => return Err(error_at(line, at + 1, "`residual` streams need a `teacache` line")),
        (None, None) => None,
    };
    Ok(DenoiseSpec {
        body,
        scheduler_config,
        steps,
        sigmas,
        latents,
        latent_input,
        timestep_input,
        timestep_div,
        timestep_i64,
        prediction_output,
        inputs,
        guidance,
        cfg_batch,
        cache,
    })
}

/// Fields of `control decode` that appear at most once.
const DECODE_SINGLE: [&str; 7] = ["forward", "prefill", "step", "tokens", "logits", "max_len", "eos"];

/// The rest of `control decode {` and its field lines up to `}`.
fn parse_decode(lines: &mut Lines<'_>, cur: &mut Cur<'_>) -> PResult<DecodeSpec> {
    cur.expect('{')?;
    cur.expect_end()?;
    let open_line = cur.line;
    let mut seen: HashMap<String, usize> = HashMap::new();
    let (mut forward, mut prefill, mut step, mut tokens, mut logits, mut max_len, mut eos) = (None, None, None, None, None, None, None);
    let mut cache = Vec::new();
    let (close_line, close_at) = loop {
        let Some(mut c) = lines.next_stmt() else {
            return Err(lines.eof(&format!("`}}` closing `control decode` from line {open_line}")));
        };
        let at = c.pos();
        if c.eat('}') {
            c.expect_end()?;
            break (c.line, at);
        }
        let (kw, kw_at) = c.ident("a decode field (`forward`, `prefill`, `step`, `tokens`, `logits`, `max_len`, `eos`, `cache`) or `}`")?;
        if DECODE_SINGLE.contains(&kw.as_str()) {
            if let Some(first) = seen.get(&kw) {
                return Err(c.err_at(kw_at, format!("duplicate decode field `{kw}` (first at line {first})")));
            }
            seen.insert(kw.clone(), c.line);
        }
        match kw.as_str() {
            "forward" => forward = Some(c.string("the quoted forward stage name")?),
            "prefill" => prefill = Some(c.string("the quoted prefill stage name")?),
            "step" => step = Some(c.string("the quoted step stage name")?),
            "tokens" => tokens = Some(c.string("the quoted token-ids input")?),
            "logits" => logits = Some(c.string("the quoted logits output")?),
            "max_len" => {
                let n_at = c.pos();
                let n = c.uint("the cache length")?;
                if n == 0 {
                    return Err(c.err_at(n_at, "the cache holds at least one position"));
                }
                max_len = Some(n);
            }
            "eos" => {
                if c.peek() != Some('[') {
                    return Err(c.expected("the stop tokens like `[2]` or `[]`"));
                }
                eos = Some(c.list(|c| c.uint("a token id"))?.into_iter().map(|t| t as i64).collect::<Vec<i64>>());
            }
            "cache" => cache.push(name_pair(&mut c, "cache entry name")?),
            _ => return Err(c.err_at(kw_at, format!("unknown decode field `{kw}`"))),
        }
        c.expect_end()?;
    };
    let missing = |what: &str| error_at(close_line, close_at + 1, format!("`control decode` is missing `{what}`"));
    Ok(DecodeSpec {
        forward: forward.ok_or_else(|| missing("forward"))?,
        prefill: prefill.ok_or_else(|| missing("prefill"))?,
        step: step.ok_or_else(|| missing("step"))?,
        tokens: tokens.ok_or_else(|| missing("tokens"))?,
        logits: logits.ok_or_else(|| missing("logits"))?,
        cache,
        max_len: max_len.ok_or_else(|| missing("max_len"))?,
        eos: eos.ok_or_else(|| missing("eos"))?,
    })
}

/// The input split into lines of chars (a trailing `\r` dropped), so that
/// columns count characters.
struct Source {
    lines: Vec<Vec<char>>,
}

impl Source {
    fn new(src: &str) -> Self {
        Source { lines: src.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l).chars().collect()).collect() }
    }
}

/// Statement lines in order, skipping blank and comment-only lines.
struct Lines<'a> {
    src: &'a Source,
    next: usize,
}

impl<'a> Lines<'a> {
    fn next_stmt(&mut self) -> Option<Cur<'a>> {
        while let Some(chars) = self.src.lines.get(self.next) {
            self.next += 1;
            let mut cur = Cur::new(self.next, chars);
            if !cur.at_end() {
                return Some(cur);
            }
        }
        None
    }

    /// "expected …, found end of input", just after the last character.
    fn eof(&self, expected: &str) -> IrError {
        let line = self.src.lines.len().max(1);
        let col = self.src.lines.last().map_or(0, |l| l.len()) + 1;
        error_at(line, col, format!("expected {expected}, found end of input"))
    }
}

/// Where a value was defined, for later references and errors.
struct Def {
    node: NodeIndex,
    results: usize,
    line: usize,
    /// Column of the op mnemonic (where type errors point).
    col: usize,
    name: String,
}

/// A graph body being read.
#[derive(Default)]
struct Body {
    graph: Graph,
    defs: Vec<Def>,
    by_name: HashMap<String, usize>,
    output_lines: HashMap<String, usize>,
}

/// Statements up to the closing `}`; the graph is verified there.
fn parse_body(lines: &mut Lines<'_>, open_line: usize, opener: &str) -> PResult<Graph> {
    let mut b = Body::default();
    loop {
        let Some(mut cur) = lines.next_stmt() else {
            return Err(lines.eof(&format!("`}}` closing `{opener}` from line {open_line}")));
        };
        let at = cur.pos();
        if cur.eat('}') {
            cur.expect_end()?;
            if b.graph.outputs.is_empty() {
                return Err(cur.err_at(at, "graph has no outputs: expected at least one `output \"name\" = %k` before `}`"));
            }
            return b.finish(cur.line, at + 1);
        }
        if cur.peek() == Some('%') {
            b.node_stmt(&mut cur)?;
        } else if cur.eat_keyword("output") {
            b.output_stmt(&mut cur)?;
        } else {
            return Err(cur.expected("a node `%k = …`, `output \"name\" = %k` or `}`"));
        }
    }
}

impl Body {
    /// `%k[:n] = mnemonic [payload] [(operands)] [{attrs}] : types [annotations] [loc("…")]`
    fn node_stmt(&mut self, cur: &mut Cur<'_>) -> PResult<()> {
        let (name, name_at) = cur.value_name()?;
        if let Some(&i) = self.by_name.get(&name) {
            let first = self.defs[i].line;
            return Err(cur.err_at(name_at, format!("duplicate definition of `{name}` (first defined at line {first})")));
        }
        let declared = if cur.eat(':') {
            let at = cur.pos();
            let n = cur.u32("a result count after `:`")?;
            if n == 0 {
                return Err(cur.err_at(at, "a node has at least one result"));
            }
            Some(n as usize)
        } else {
            None
        };
        cur.expect('=')?;
        let (mnemonic, mn_at) = cur.ident("an op mnemonic")?;
        let proto = attrs::prototype(&mnemonic).ok_or_else(|| cur.err_at(mn_at, format!("unknown op `{mnemonic}`")))?;
        let payload = self.payload(cur, &proto)?;
        let operands = self.operands(cur)?;
        let attrs_at = cur.pos();
        let map = if cur.peek() == Some('{') { attr_block(cur, &proto)? } else { HashMap::new() };
        let mut attrs = Attrs { mnemonic: proto.mnemonic(), map };
        if !cur.eat(':') {
            return Err(cur.expected("`:` and the result type"));
        }
        let types_at = cur.pos();
        let mut types = vec![cur.tensor_type()?];
        while cur.eat(',') {
            types.push(cur.tensor_type()?);
        }
        let (annotations, label) = trailer(cur)?;
        let n = declared.unwrap_or(1);
        if types.len() != n {
            let msg = match declared {
                Some(_) => format!("`{name}:{n}` declares {n} results but {} result types follow", types.len()),
                None => format!("`{name}` has one result but {k} result types follow (write `{name}:{k}` for a multi-result op)", k = types.len()),
            };
            return Err(cur.err_at(types_at, msg));
        }
        let op = match (proto, payload) {
            (Op::Input { .. }, Payload::Name(key)) => Op::Input { name: key, ty: source_type(&mut attrs, &types)? },
            (Op::Param { .. }, Payload::Name(key)) => Op::Param { name: key, ty: source_type(&mut attrs, &types)? },
            (Op::Constant(_), Payload::Values(values, at)) => constant(cur, values, at, &mut attrs, &types[0], types_at)?,
            (proto, _) => attrs::build(proto, &mut attrs).map_err(|m| cur.err_at(attrs_at, m))?,
        };
        let node = self.graph.add_unchecked(op, &operands, types);
        let nw = self.graph.node_mut(node);
        nw.annotations = annotations;
        nw.label = label;
        self.by_name.insert(name.clone(), self.defs.len());
        self.defs.push(Def { node, results: n, line: cur.line, col: mn_at + 1, name });
        Ok(())
    }

    /// The name of an input/param or the values of a constant.
    fn payload(&self, cur: &mut Cur<'_>, proto: &Op) -> PResult<Payload> {
        Ok(match proto {
            Op::Input { .. } | Op::Param { .. } => Payload::Name(cur.string(&format!("the quoted name of the {}", proto.mnemonic()))?),
            Op::Constant(_) => {
                let at = cur.pos();
                if cur.peek() != Some('[') {
                    return Err(cur.expected("the constant's values like `[1.0, -inf]`"));
                }
                Payload::Values(cur.list(|c| c.float("a number"))?, at)
            }
            _ => Payload::None,
        })
    }

    /// `(use, use, …)`, or nothing when no `(` follows.
    fn operands(&self, cur: &mut Cur<'_>) -> PResult<Vec<ValueRef>> {
        let mut out = Vec::new();
        if !cur.eat('(') || cur.eat(')') {
            return Ok(out);
        }
        loop {
            out.push(self.use_ref(cur)?);
            if cur.eat(')') {
                return Ok(out);
            }
            if !cur.eat(',') {
                return Err(cur.expected("`,` or `)`"));
            }
        }
    }

    /// `%k` or `%k#p`, which must be defined above.
    fn use_ref(&self, cur: &mut Cur<'_>) -> PResult<ValueRef> {
        let (name, at) = cur.value_name()?;
        let def = match self.by_name.get(&name) {
            Some(&i) => &self.defs[i],
            None => return Err(cur.err_at(at, format!("unknown value `{name}` (not defined above this line)"))),
        };
        let port = if cur.eat('#') {
            let port_at = cur.pos();
            let p = cur.u32("a result number after `#`")?;
            if p as usize >= def.results {
                let msg = format!("`{name}` has {} result(s), so there is no `{name}#{p}`", def.results);
                return Err(cur.err_at(port_at, msg));
            }
            p
        } else if def.results != 1 {
            let msg = format!("`{name}` has {} results: use one of `{name}#0` … `{name}#{}`", def.results, def.results - 1);
            return Err(cur.err_at(at, msg));
        } else {
            0
        };
        Ok(ValueRef::new(def.node, port))
    }

    /// `output "name" = %k` (after the keyword).
    fn output_stmt(&mut self, cur: &mut Cur<'_>) -> PResult<()> {
        let at = cur.pos();
        let name = cur.string("a quoted output name")?;
        if let Some(first) = self.output_lines.get(&name) {
            return Err(cur.err_at(at, format!("duplicate output {} (first at line {first})", quote(&name))));
        }
        cur.expect('=')?;
        let v = self.use_ref(cur)?;
        cur.expect_end()?;
        self.output_lines.insert(name.clone(), cur.line);
        self.graph.outputs.push((name, v));
        Ok(())
    }

    /// Run the verifier; its first error is reported at the line of the
    /// node it names, with the verifier's `%k` numbers replaced by the names
    /// used in the text. Errors naming no node point at (`line`, `col`).
    fn finish(self, line: usize, col: usize) -> PResult<Graph> {
        let Err(e) = verify_graph(&self.graph) else { return Ok(self.graph) };
        let order = self.graph.topo_order().unwrap_or_default();
        let def_of = |k: usize| order.get(k).and_then(|n| self.defs.iter().find(|d| d.node == *n));
        Err(match e {
            IrError::Verify { op, value, message } => {
                let k = value.strip_prefix('%').and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next()?.parse::<usize>().ok());
                let message = rename_values(&message, |k| def_of(k).map(|d| d.name.as_str()));
                match k.and_then(def_of) {
                    Some(d) => error_at(d.line, d.col, format!("type error in `{op}` defining `{}`: {message}", d.name)),
                    None => error_at(line, col, format!("type error in `{op}`: {message}")),
                }
            }
            other => error_at(line, col, other.to_string()),
        })
    }
}

/// What follows the mnemonic of a source op.
enum Payload {
    None,
    Name(String),
    /// Values and the position of their `[`.
    Values(Vec<f64>, usize),
}

/// `{key=value, …}` read with the kinds of the op's schema.
fn attr_block(cur: &mut Cur<'_>, proto: &Op) -> PResult<HashMap<&'static str, Attr>> {
    let schema = attrs::schema(proto);
    let mnemonic = proto.mnemonic();
    let mut map = HashMap::new();
    cur.expect('{')?;
    if cur.eat('}') {
        return Ok(map);
    }
    loop {
        let (key, at) = cur.ident("an attribute name")?;
        let Some(&(k, kind)) = schema.iter().find(|(k, _)| *k == key) else {
            let msg = if schema.is_empty() {
                format!("`{mnemonic}` takes no attributes, found `{key}`")
            } else {
                let known: Vec<String> = schema.iter().map(|(k, _)| format!("`{k}`")).collect();
                format!("unknown attribute `{key}` for `{mnemonic}` (expected one of {})", known.join(", "))
            };
            return Err(cur.err_at(at, msg));
        };
        if map.contains_key(k) {
            return Err(cur.err_at(at, format!("duplicate attribute `{key}`")));
        }
        cur.expect('=')?;
        map.insert(k, attr_value(cur, kind)?);
        if cur.eat('}') {
            return Ok(map);
        }
        if !cur.eat(',') {
            return Err(cur.expected("`,` or `}`"));
        }
    }
}

/// One attribute value of the given kind.
fn attr_value(cur: &mut Cur<'_>, kind: Kind) -> PResult<Attr> {
    let what = kind.describe();
    if matches!(kind, Kind::Uints | Kind::Dims | Kind::Pairs) && cur.peek() != Some('[') {
        return Err(cur.expected(what));
    }
    Ok(match kind {
        Kind::Uint => Attr::Uint(cur.uint(what)?),
        Kind::Float => Attr::Float(cur.float(what)?),
        Kind::OptFloat if cur.eat_keyword("none") => Attr::OptFloat(None),
        Kind::OptFloat => Attr::OptFloat(Some(cur.float(what)?)),
        Kind::Bool => Attr::Bool(cur.boolean()?),
        Kind::DType => Attr::DType(cur.dtype()?),
        Kind::Dim => Attr::Dim(cur.dim()?),
        Kind::Uints => Attr::Uints(cur.list(|c| c.uint("an unsigned integer"))?),
        Kind::Dims => Attr::Dims(cur.dims()?),
        Kind::Pairs => Attr::Pairs(cur.list(|c| {
            c.expect('(')?;
            let a = c.uint("an unsigned integer")?;
            c.expect(',')?;
            let b = c.uint("an unsigned integer")?;
            c.expect(')')?;
            Ok((a, b))
        })?),
        Kind::Type => Attr::Type(cur.tensor_type()?),
        Kind::Unary => {
            let (name, at) = cur.ident(what)?;
            let u = crate::op::UnaryOp::ALL.iter().find(|u| u.name() == name).ok_or_else(|| {
                let known: Vec<&str> = crate::op::UnaryOp::ALL.iter().map(|u| u.name()).collect();
                cur.err_at(at, format!("unknown unary function `{name}`; expected one of {}", known.join(", ")))
            })?;
            Attr::Unary(*u)
        }
    })
}

/// Annotations and an optional `loc("…")` up to the end of the line.
fn trailer(cur: &mut Cur<'_>) -> PResult<(Vec<Annotation>, Option<String>)> {
    let mut annotations = Vec::new();
    let mut label = None;
    loop {
        match cur.peek() {
            None => return Ok((annotations, label)),
            Some('#') => annotations.push(annotation(cur)?),
            _ if cur.peek_ident().as_deref() == Some("loc") => {
                let at = cur.pos();
                if label.is_some() {
                    return Err(cur.err_at(at, "second `loc(…)` on one node"));
                }
                cur.keyword("loc")?;
                cur.expect('(')?;
                label = Some(cur.string("a quoted label")?);
                cur.expect(')')?;
            }
            _ => return Err(cur.expected("an annotation like `#block(i)`, `loc(\"…\")` or end of line")),
        }
    }
}

/// `#block(i)`, `#dispatch(k)`, `#buffer(id)` / `#buffer(id, result=p)`,
/// or `#role(name)` / `#role("name")`.
fn annotation(cur: &mut Cur<'_>) -> PResult<Annotation> {
    cur.expect('#')?;
    let (kw, at) = cur.ident("`block`, `dispatch`, `buffer` or `role` after `#`")?;
    let a = match kw.as_str() {
        "block" => {
            cur.expect('(')?;
            Annotation::Block(cur.u32("a block index")?)
        }
        "dispatch" => {
            cur.expect('(')?;
            Annotation::Dispatch(cur.u32("a dispatch region index")?)
        }
        "buffer" => {
            cur.expect('(')?;
            let id = cur.u32("a buffer index")?;
            let result = if cur.eat(',') {
                cur.keyword("result")?;
                cur.expect('=')?;
                cur.u32("a result index")?
            } else {
                0
            };
            Annotation::Buffer { id, result }
        }
        "role" => {
            cur.expect('(')?;
            if cur.peek() == Some('"') {
                Annotation::Role(Role::Other(cur.string("a role")?))
            } else {
                Annotation::Role(Role::from_name(&cur.ident("a role name")?.0))
            }
        }
        _ => return Err(cur.err_at(at, format!("unknown annotation `#{kw}` (expected `#block(i)`, `#role(name)`, `#dispatch(k)` or `#buffer(id)`)"))),
    };
    cur.expect(')')?;
    Ok(a)
}

/// Type of an input/param: its `ty` attribute if given, else the result type.
fn source_type(attrs: &mut Attrs, types: &[TensorType]) -> PResult<TensorType> {
    Ok(match attrs.map.remove("ty") {
        Some(Attr::Type(t)) => t,
        _ => types[0].clone(),
    })
}

/// A constant: dtype and shape from its attributes if given, else from the
/// result type `ty` (which must then be static); values must fill the shape.
fn constant(cur: &Cur<'_>, values: Vec<f64>, values_at: usize, attrs: &mut Attrs, ty: &TensorType, ty_at: usize) -> PResult<Op> {
    let dtype = match attrs.map.remove("dtype") {
        Some(Attr::DType(d)) => d,
        _ => ty.dtype,
    };
    let shape = match attrs.map.remove("shape") {
        Some(Attr::Uints(s)) => s,
        _ => static_dims(&ty.shape).ok_or_else(|| cur.err_at(ty_at, format!("a constant needs a static result type, found {ty}")))?,
    };
    match shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) {
        Some(n) if n == values.len() => Ok(Op::Constant(Literal { dtype, shape, values })),
        Some(n) => Err(cur.err_at(values_at, format!("constant of shape {shape:?} needs {n} values, found {}", values.len()))),
        None => Err(cur.err_at(values_at, format!("constant shape {shape:?} has too many elements"))),
    }
}

/// Replace each `%k` (a number) in `message` by `name(k)` where known.
fn rename_values<'n>(message: &str, name: impl Fn(usize) -> Option<&'n str>) -> String {
    let chars: Vec<char> = message.chars().collect();
    let mut out = String::with_capacity(message.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        if c != '%' {
            out.push(c);
            continue;
        }
        let start = i;
        while chars.get(i).is_some_and(|c| c.is_ascii_digit()) {
            i += 1;
        }
        let digits: String = chars[start..i].iter().collect();
        match digits.parse::<usize>().ok().and_then(&name) {
            Some(n) => out.push_str(n),
            None => {
                out.push('%');
                out.push_str(&digits);
            }
        }
    }
    out
}
