//! The `[[rules]]` table compiled once at load: all path patterns go into one
//! `GlobSet`, so matching a request costs one automaton pass however many
//! rules there are; file order decides between several matches.

use super::config::RuleConfig;
use globset::{GlobBuilder, GlobMatcher, GlobSet, GlobSetBuilder};

/// A rule that cannot be compiled: which key, and why (the config loader
/// turns it into its own error, naming the key the same way).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}`: {message}")]
pub struct RuleError {
    pub key: String,
    pub message: String,
}

#[derive(Debug)]
pub struct Rule {
    /// Shared with every decision it makes (`RoutePolicy`, `Outcome`):
    /// `Arc`s, so a check clones counts, not text.
    pub id: std::sync::Arc<str>,
    pub host: Option<GlobMatcher>,
    pub methods: Vec<String>,
    pub scopes: std::sync::Arc<[String]>,
    pub any_of: std::sync::Arc<[Vec<String>]>,
    pub public: bool,
    /// No token is fine; a token given must be valid.
    pub optional: bool,
    /// Where the token may be; empty: the `Authorization` header only.
    pub token_from: std::sync::Arc<[crate::extract::sources::TokenSource]>,
    /// Claim conditions a token must meet (audiences, issuers, clients, claims).
    pub conditions: std::sync::Arc<super::conditions::Conditions>,
    /// The pattern as written, for explanations.
    pub path: String,
}

#[derive(Debug)]
pub struct RuleSet {
    rules: Vec<Rule>,
    paths: GlobSet,
    /// The patterns in lower case, for [`RuleSet::letter_case`]; `None`
    /// when no pattern holds a capital (then `paths` is that set).
    folded: Option<GlobSet>,
    /// Host patterns as written, for the shadowing lint.
    hosts: Vec<Option<String>>,
}

/// How the two spellings of a path with a trailing `/` fall under rules
/// ([`RuleSet::trailing_slash`]).
#[derive(Debug)]
pub enum SlashForms<'a> {
    /// The rule found for the path as sent decides.
    Agree,
    /// The bare form's rule decides: the one sent is public, this one not.
    Stricter(&'a Rule),
    /// The one sent is public and no rule covers the bare form: no rule
    /// decides (default deny), as a handler for the bare path may serve it.
    Unruled,
    /// Two different non-public rules: refused.
    Ambiguous,
}

impl<'a> SlashForms<'a> {
    /// `found` matched the path as sent, `other` another spelling of it.
    fn between(found: &'a Rule, other: &'a Rule) -> SlashForms<'a> {
        match (found.public, other.public) {
            (true, false) => SlashForms::Stricter(other),
            // Both public: either handler may serve it, anonymously.
            (false, true) | (true, true) => SlashForms::Agree,
            (false, false) => SlashForms::Ambiguous,
        }
    }
}

/// Whether `pattern` differs from its `lower` spelling outside `{name}`s.
fn has_capital_outside_braces(lower: &str, pattern: &str) -> bool {
    let mut depth = 0u32;
    lower.bytes().zip(pattern.bytes()).any(|(l, p)| {
        match p {
            b'{' => depth += 1,
            b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        depth == 0 && l != p
    })
}

/// `path` with ASCII letters in lower case, but not the hex digits of its
/// escapes (kept upper-case, the form rules match).
fn lower_case_outside_escapes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut hex_left = 0;
    for c in path.chars() {
        match c {
            '%' => {
                hex_left = 2;
                out.push(c);
            }
            _ if hex_left > 0 => {
                hex_left -= 1;
                out.push(c);
            }
            _ => out.push(c.to_ascii_lowercase()),
        }
    }
    out
}

/// Why a rule did not apply, for `Explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    Path,
    Method,
    Host,
}

impl RuleSet {
    pub fn compile(configs: &[RuleConfig]) -> Result<RuleSet, RuleError> {
        let mut paths = GlobSetBuilder::new();
        let mut folded = GlobSetBuilder::new();
        let mut any_capital = false;
        let mut rules = Vec::with_capacity(configs.len());
        for (n, rc) in configs.iter().enumerate() {
            let glob = path_glob(&rc.path).map_err(|message| RuleError {
                key: format!("rules[{n}].path"),
                message,
            })?;
            paths.add(glob);
            let lower = lower_case_outside_escapes(&rc.path);
            // `{petId}` matches what `{petid}` does: no capital of a route's.
            any_capital |= has_capital_outside_braces(&lower, &rc.path);
            folded.add(path_glob(&lower).map_err(|message| RuleError {
                key: format!("rules[{n}].path"),
                message,
            })?);
            if rc.public && rc.optional {
                return Err(RuleError {
                    key: format!("rules[{n}].optional"),
                    message:
                        "a rule is public (no token looked at) or optional (a token, if given, must be valid), not both"
                            .into(),
                });
            }
            let host = rc
                .host
                .as_deref()
                // Requests are matched without the trailing dot (`extract::canonical`): so are rules.
                .map(|h| host_glob(h.strip_suffix('.').unwrap_or(h)).map(|g| g.compile_matcher()))
                .transpose()
                .map_err(|message| RuleError {
                    key: format!("rules[{n}].host"),
                    message,
                })?;
            rules.push(Rule {
                id: rc.id.as_str().into(),
                host,
                // Requests are matched upper-case (`extract::canonical`): so are rules.
                methods: rc.methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
                scopes: rc.scopes.as_slice().into(),
                any_of: rc.any_of.as_slice().into(),
                public: rc.public,
                optional: rc.optional,
                conditions: std::sync::Arc::new(super::conditions::Conditions::from_rule(rc)),
                token_from: token_sources(&rc.token_from).map_err(|message| RuleError {
                    key: format!("rules[{n}].token_from"),
                    message,
                })?,
                path: rc.path.clone(),
            });
        }
        let build = |set: GlobSetBuilder| {
            set.build().map_err(|e| RuleError {
                key: "rules".into(),
                message: e.to_string(),
            })
        };
        let paths = build(paths)?;
        let folded = any_capital.then(|| build(folded)).transpose()?;
        let hosts = configs
            .iter()
            .map(|c| c.host.as_ref().map(|h| h.to_ascii_lowercase()))
            .collect();
        Ok(RuleSet {
            rules,
            paths,
            folded,
            hosts,
        })
    }

    /// Rules that can never match because an earlier rule matches every
    /// request they would: `(shadowed id, earlier id)`. A lint, not a proof:
    /// it samples each `*`/`{name}`/`**` of the later pattern.
    pub fn shadowed(&self) -> Vec<(&str, &str)> {
        self.shadowed_in(&self.paths, |p| p.to_owned())
    }

    /// The same for a router that ignores case (see
    /// [`RuleSet::letter_case`]): a rule written with capitals that an
    /// earlier rule covers in lower case is decided by that rule for every
    /// spelling there (`/api/**` before `/API/Admin/**`). Pairs
    /// [`RuleSet::shadowed`] reports are left out.
    pub fn shadowed_ignoring_case(&self) -> Vec<(&str, &str)> {
        let Some(folded) = &self.folded else {
            return Vec::new();
        };
        let plain = self.shadowed();
        self.shadowed_in(folded, lower_case_outside_escapes)
            .into_iter()
            .filter(|pair| !plain.contains(pair))
            .collect()
    }

    fn shadowed_in(&self, paths: &GlobSet, spell: impl Fn(&str) -> String) -> Vec<(&str, &str)> {
        let mut out = Vec::new();
        for (j, later) in self.rules.iter().enumerate() {
            // The compiled set answers for every earlier rule at once: an earlier
            // rule covers the later one if it matches both samples of its pattern.
            let path = spell(&later.path);
            let deep = paths.matches(path.replace("**", "__seg__/__seg__"));
            let one = paths.matches(path.replace("**", "__seg__"));
            let earlier = deep
                .iter()
                .take_while(|i| **i < j)
                .filter(|i| one.contains(i))
                .map(|i| (*i, &self.rules[*i]))
                .find(|(i, r)| {
                    // An any-method rule covers everything; a listed set covers only listed subsets.
                    let methods = r.methods.is_empty()
                        || (!later.methods.is_empty() && later.methods.iter().all(|m| covers_method(&r.methods, m)));
                    let host = self.hosts[*i].is_none() || self.hosts[*i] == self.hosts[j];
                    methods && host
                });
            if let Some((_, r)) = earlier {
                out.push((&*later.id, &*r.id));
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// First rule, in file order, whose path, method and host all match.
    pub fn find(&self, method: &str, host: &str, path: &str) -> Option<&Rule> {
        self.find_in(&self.paths, method, host, path)
    }

    fn find_in(&self, paths: &GlobSet, method: &str, host: &str, path: &str) -> Option<&Rule> {
        let host = strip_port(host);
        // `matches` returns indices in ascending order, i.e. file order.
        paths
            .matches(path)
            .into_iter()
            .map(|i| &self.rules[i])
            .find(|r| r.mismatch_except_path(method, host).is_none())
    }

    /// The rule that decides `path` when it is sent with a trailing `/`
    /// and its bare form falls under another rule than `found`. Routers
    /// differ on `/users/42/`: Rails, Express and Django serve (or
    /// redirect to) `/users/42`, Go's ServeMux, Spring 6 and static file
    /// servers do not; so we cannot know which handler runs. When one of
    /// the two rules is public the other decides: whichever handler runs,
    /// that one's requirements cover it. Otherwise the check is refused
    /// ([`SlashForms::Ambiguous`]). Only a path that ends in `/` is looked
    /// at twice: the common form costs one byte compare.
    pub fn trailing_slash<'a>(
        &'a self,
        method: &str,
        host: &str,
        path: &str,
        found: Option<&'a Rule>,
    ) -> SlashForms<'a> {
        let Some(found) = found else {
            return SlashForms::Agree;
        };
        let Some(bare) = path.strip_suffix('/').filter(|p| !p.is_empty()) else {
            return SlashForms::Agree;
        };
        match self.find(method, host, bare) {
            Some(other) if !std::ptr::eq(other, found) => SlashForms::between(found, other),
            // A public or optional subtree (`/files/**`: anonymous callers
            // pass) and no rule for `/files`: the bare form is denied by
            // default, so its spelling with a slash must not be the way in
            // to a handler that serves both.
            None if found.public || found.optional => SlashForms::Unruled,
            _ => SlashForms::Agree,
        }
    }

    /// The rule that decides `path` for a router that ignores case:
    /// Express (by default), ASP.NET Core and IIS run `/Admin/users` as the
    /// route `/admin/users` (and `/admin/x` as a route written `/Admin/**`),
    /// so the path and the patterns are compared in lower case too (the
    /// bare form as well, when the path ends in `/`: Express ignores both).
    /// When that finds another rule than `found`: a public rule yields to
    /// it, two non-public ones are refused, as for a trailing slash. With
    /// no capital in the path or any pattern, one byte scan.
    pub fn letter_case<'a>(&'a self, method: &str, host: &str, path: &str, found: Option<&'a Rule>) -> SlashForms<'a> {
        let Some(found) = found else {
            return SlashForms::Agree;
        };
        if self.folded.is_none() && !path.bytes().any(|b| b.is_ascii_uppercase()) {
            return SlashForms::Agree;
        }
        let folded = self.folded.as_ref().unwrap_or(&self.paths);
        let lower = lower_case_outside_escapes(path);
        let bare = lower.strip_suffix('/').filter(|p| !p.is_empty());
        let mut verdict = SlashForms::Agree;
        for form in std::iter::once(lower.as_str()).chain(bare) {
            let next = match self.find_in(folded, method, host, form) {
                Some(other) if !std::ptr::eq(other, found) => SlashForms::between(found, other),
                _ => SlashForms::Agree,
            };
            verdict = match (verdict, next) {
                (SlashForms::Ambiguous, _) | (_, SlashForms::Ambiguous) => SlashForms::Ambiguous,
                (SlashForms::Stricter(a), SlashForms::Stricter(b)) if !std::ptr::eq(a, b) => SlashForms::Ambiguous,
                (SlashForms::Stricter(a), _) | (_, SlashForms::Stricter(a)) => SlashForms::Stricter(a),
                _ => SlashForms::Agree,
            };
        }
        verdict
    }

    /// The rules' path patterns, as written, in file order.
    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.path.as_str())
    }

    /// Whether some rule matches on method and path for some host: the
    /// "routes without a rule" lint, which has no host to test with.
    pub fn covers_on_some_host(&self, method: &str, path: &str) -> bool {
        self.paths
            .matches(path)
            .into_iter()
            .any(|i| self.rules[i].mismatch_except_path(method, "") != Some(Mismatch::Method))
    }

    /// Every rule with why it did or did not match; for explanations only.
    /// One line per rule saying whether it matches and why not, for
    /// explanations; the first match in file order is the one used.
    pub fn narrate(&self, method: &str, host: &str, path: &str) -> Vec<String> {
        let mut first: Option<&str> = None;
        self.explain(method, host, path)
            .into_iter()
            .map(|(rule, why)| {
                let verdict = match why {
                    None => match first {
                        Some(earlier) => format!("matches too, but not used: rule {earlier:?} comes first"),
                        None => {
                            first = Some(&rule.id);
                            "matches (first match in file order: used)".to_owned()
                        }
                    },
                    Some(Mismatch::Path) => format!("path does not match {:?}", rule.path),
                    Some(Mismatch::Method) => format!("method not in {:?}", rule.methods),
                    Some(Mismatch::Host) => "host does not match".to_owned(),
                };
                format!("rule {:?}: {verdict}", rule.id)
            })
            .collect()
    }

    pub fn explain<'a>(&'a self, method: &str, host: &str, path: &str) -> Vec<(&'a Rule, Option<Mismatch>)> {
        let host = strip_port(host);
        let hits = self.paths.matches(path);
        self.rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let why = if hits.binary_search(&i).is_err() {
                    Some(Mismatch::Path)
                } else {
                    r.mismatch_except_path(method, host)
                };
                (r, why)
            })
            .collect()
    }
}

impl Rule {
    fn mismatch_except_path(&self, method: &str, host: &str) -> Option<Mismatch> {
        if !self.methods.is_empty() && !covers_method(&self.methods, method) {
            return Some(Mismatch::Method);
        }
        if let Some(h) = &self.host {
            if !h.is_match(host) {
                return Some(Mismatch::Host);
            }
        }
        None
    }
}

/// Whether a rule listing `methods` (non-empty) covers `method`. HEAD is
/// what most frameworks answer with the GET handler, so a GET rule covers
/// it; otherwise a HEAD would fall past the GET rule to a weaker one.
fn covers_method(methods: &[String], method: &str) -> bool {
    methods.iter().any(|m| m == method || (method == "HEAD" && m == "GET"))
}

/// `host:port` → host, `[v6]:port` → `[v6]`. Envoy's `host` is the
/// `:authority`. A bracketed literal keeps its brackets: no host pattern
/// can hold one, so it is never matched as the text inside
/// (`[status.example.com]` is not `status.example.com`).
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Translate our path pattern to a glob where `*` never crosses `/`.
/// `*` and `{name}` match one non-empty segment, `**` everything below its
/// prefix (`/admin/**` matches `/admin/` and `/admin/x/y`, not `/admin`);
/// `*` inside a segment (`*.json`) is a within-segment wildcard; every
/// other character is literal. A pattern requests can never take (an
/// escape normalization decodes, an empty segment) is refused rather than
/// silently never matching.
fn path_glob(pattern: &str) -> Result<globset::Glob, String> {
    if !pattern.starts_with('/') {
        return Err(format!("{pattern:?} must start with '/'"));
    }
    if pattern.contains(['?', '#']) {
        return Err(format!(
            "{pattern:?}: patterns match the path only, without query or fragment"
        ));
    }
    // A trailing `/` is a segment of its own; an empty one elsewhere is not.
    let inner = pattern.strip_suffix('/').unwrap_or(pattern);
    if inner.len() > 1 && inner[1..].split('/').any(str::is_empty) {
        return Err(format!(
            "{pattern:?}: an empty segment never matches (requests have repeated slashes merged)"
        ));
    }
    let glob = segments_glob(pattern, pattern)?;
    GlobBuilder::new(&glob)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| format!("{pattern:?}: {e}"))
}

/// The glob text of `path`, a part of `pattern` (named in errors).
fn segments_glob(pattern: &str, path: &str) -> Result<String, String> {
    let mut glob = String::with_capacity(path.len() + 8);
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            glob.push('/');
        }
        match seg {
            "**" => glob.push_str("**"),
            "*" => glob.push_str("?*"),
            _ if seg.starts_with('{') && seg.ends_with('}') => {
                let name = &seg[1..seg.len() - 1];
                // OpenAPI parameter names may carry '-' and '.' (`{user-id}`).
                let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.');
                if name.is_empty() || !name.bytes().all(ok) {
                    return Err(format!("{pattern:?}: bad segment parameter {seg:?}"));
                }
                glob.push_str("?*");
            }
            _ => {
                if seg.contains("**") || seg.contains(['{', '}']) {
                    return Err(format!("{pattern:?}: '**' and '{{name}}' must be whole segments"));
                }
                for (n, part) in seg.split('*').enumerate() {
                    if n > 0 {
                        glob.push('*');
                    }
                    if !crate::extract::path::is_canonical_pattern_text(part) {
                        let hint = crate::extract::path::canonical_pattern_text(part)
                            .map(|c| format!(" (here: {c:?})"))
                            .unwrap_or_default();
                        return Err(format!(
                            "{pattern:?}: {part:?} is not how request paths are matched{hint}: write \
                             `!$&'()*+,=:@~` and letters, digits, `-._` as themselves (not `%3A`), non-ASCII, \
                             spaces and `\"<>[]^`{{|}}` as upper-case UTF-8 escapes (`é` is `%C3%A9`), \
                             and no `;`, `\\` or control characters"
                        ));
                    }
                    // `,` separates alternatives, should a glob hold `{...}`.
                    glob.push_str(&globset::escape(part).replace(',', "[,]"));
                }
            }
        }
    }
    Ok(glob)
}

fn host_glob(pattern: &str) -> Result<globset::Glob, String> {
    if pattern.is_empty() || pattern.contains(['/', '?', '[', ']', '{', '}', ':']) {
        return Err(format!(
            "{pattern:?} must be a host name, optionally with '*' (no port)"
        ));
    }
    let escaped: Vec<String> = pattern.split('*').map(globset::escape).collect();
    GlobBuilder::new(&escaped.join("*"))
        .case_insensitive(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| format!("{pattern:?}: {e}"))
}

/// A rule's `token_from`; the default (`Authorization` only) is empty, so
/// the common case costs nothing after extraction.
fn token_sources(list: &[String]) -> Result<std::sync::Arc<[crate::extract::sources::TokenSource]>, String> {
    use crate::extract::sources::TokenSource;
    let sources = list
        .iter()
        .map(|s| TokenSource::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    if sources == [TokenSource::Authorization] {
        return Ok(std::sync::Arc::new([]));
    }
    Ok(sources.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_host_with_a_trailing_dot_still_matches() {
        let r = RuleSet::compile(&[RuleConfig {
            id: "admin".into(),
            host: Some("Admin.Example.com.".into()),
            path: "/date".into(),
            ..Default::default()
        }])
        .expect("compile");
        assert!(r.find("GET", "admin.example.com", "/date").is_some());
    }

    fn rule(id: &str, methods: &[&str], path: &str) -> RuleConfig {
        RuleConfig {
            id: id.into(),
            methods: methods.iter().map(|m| m.to_string()).collect(),
            path: path.into(),
            ..Default::default()
        }
    }

    fn set(rules: Vec<RuleConfig>) -> RuleSet {
        RuleSet::compile(&rules).expect("rules compile")
    }

    fn found(s: &RuleSet, m: &str, p: &str) -> Option<String> {
        s.find(m, "api.local", p).map(|r| r.id.to_string())
    }

    #[test]
    fn literal_paths_and_methods() {
        let s = set(vec![rule("date", &["GET"], "/date"), rule("echo", &["POST"], "/echo")]);
        assert_eq!(found(&s, "GET", "/date").as_deref(), Some("date"));
        assert_eq!(found(&s, "POST", "/echo").as_deref(), Some("echo"));
        assert_eq!(found(&s, "POST", "/date"), None);
        assert_eq!(found(&s, "GET", "/date/"), None);
        assert_eq!(found(&s, "GET", "/dates"), None);
        assert_eq!(found(&s, "GET", "/DATE"), None);
    }

    #[test]
    fn single_segment_wildcards() {
        let s = set(vec![rule("a", &[], "/users/{id}/posts/*")]);
        assert!(found(&s, "GET", "/users/7/posts/9").is_some());
        assert!(found(&s, "GET", "/users/7/posts/9/x").is_none());
        assert!(found(&s, "GET", "/users//posts/9").is_none());
        assert!(found(&s, "GET", "/users/7/posts/").is_none());
    }

    #[test]
    fn multi_segment_wildcard() {
        let s = set(vec![rule("a", &[], "/static/**")]);
        assert!(found(&s, "GET", "/static/a").is_some());
        assert!(found(&s, "GET", "/static/a/b/c.css").is_some());
        assert!(found(&s, "GET", "/staticx/a").is_none());
        // Everything below the prefix, not the prefix itself.
        assert!(found(&s, "GET", "/static").is_none());
        assert!(found(&s, "GET", "/static/").is_some());
        let everything = set(vec![rule("all", &[], "/**")]);
        assert!(found(&everything, "GET", "/").is_some());
        assert!(found(&everything, "GET", "/a/b").is_some());
    }

    /// `/users/42/` is `/users/42` to Rails or Express, and a path of its
    /// own to Go's ServeMux or Spring 6: when the two spellings fall under
    /// different rules, neither decides (the check is refused), whichever
    /// is the weaker one.
    #[test]
    fn a_trailing_slash_that_changes_the_rule_is_ambiguous() {
        let forms = |s: &RuleSet, p: &str| {
            let found = s.find("GET", "api.local", p);
            match s.trailing_slash("GET", "api.local", p, found) {
                SlashForms::Agree => found.map(|r| r.id.to_string()).unwrap_or_default(),
                SlashForms::Stricter(r) => format!("stricter {}", r.id),
                SlashForms::Unruled => "unruled".into(),
                SlashForms::Ambiguous => "ambiguous".into(),
            }
        };
        // The subtree rule weaker than the exact one, neither public: refused.
        let s = set(vec![
            rule("user", &["GET"], "/users/{id}"),
            rule("user-sub", &["GET"], "/users/{id}/**"),
        ]);
        assert_eq!(forms(&s, "/users/42/"), "ambiguous");
        assert_eq!(forms(&s, "/users/42"), "user", "the bare form is never looked at twice");
        assert_eq!(forms(&s, "/users/42/posts/"), "user-sub");
        // A public landing page before a scoped subtree: the scoped rule
        // decides /admin/, whichever of the two handlers serves it.
        let mut landing = rule("landing", &["GET"], "/admin");
        landing.public = true;
        let s = set(vec![landing.clone(), rule("admin", &["GET"], "/admin/**")]);
        assert_eq!(forms(&s, "/admin/"), "admin");
        assert_eq!(forms(&s, "/admin/x"), "admin");
        // And the other way round (a catch-all before a public page).
        let mut page = rule("page", &["GET"], "/api/public/{x}");
        page.public = true;
        let s = set(vec![rule("api", &["GET"], "/api/**"), page]);
        assert_eq!(forms(&s, "/api/public/1/"), "api");
        let mut sub = rule("sub", &["GET"], "/docs/**");
        sub.public = true;
        let s = set(vec![sub, rule("docs", &["GET"], "/docs")]);
        assert_eq!(forms(&s, "/docs/"), "stricter docs");
        // One rule for both spellings, or none for the bare one: no doubt.
        let s = set(vec![
            rule("static", &["GET"], "/static/**"),
            rule("date", &["GET"], "/date"),
        ]);
        assert_eq!(forms(&s, "/static/"), "static");
        assert_eq!(forms(&s, "/date/"), "", "no rule takes /date/: default deny");
        assert_eq!(forms(&s, "/"), "");
        let s = set(vec![rule("all", &[], "/**")]);
        assert_eq!(forms(&s, "/a/"), "all");
        // A public subtree with no rule for its bare path: /files is denied
        // by default, so /files/ (served as /files by Express, Rails,
        // Django) is too; /files/x is the subtree's.
        let mut files = rule("files", &["GET"], "/files/**");
        files.public = true;
        let s = set(vec![files]);
        assert_eq!(forms(&s, "/files/"), "unruled");
        assert_eq!(forms(&s, "/files/x"), "files");
        assert_eq!(forms(&s, "/files/x/"), "files", "the bare form is the same rule's");
        // The same for a subtree anonymous callers may enter (optional).
        let mut feed = rule("feed", &["GET"], "/feed/**");
        feed.optional = true;
        let s = set(vec![feed]);
        assert_eq!(forms(&s, "/feed/"), "unruled");
        assert_eq!(forms(&s, "/feed/x"), "feed");
        // Two public rules: either serves it anonymously, no doubt.
        let mut docs = rule("docs", &["GET"], "/docs");
        docs.public = true;
        let mut docs_sub = rule("docs-sub", &["GET"], "/docs/**");
        docs_sub.public = true;
        let s = set(vec![docs, docs_sub]);
        assert_eq!(forms(&s, "/docs/"), "docs-sub");
    }

    /// An escaped `:` (or `@`, `+`, ...) is matched as the character most
    /// upstream routers decode it to, so it cannot skip the rule naming
    /// the character and fall to a wider one.
    #[test]
    fn an_escaped_reserved_character_matches_the_rule_naming_it() {
        let s = set(vec![
            rule("publish", &["POST"], "/v1/items/*:publish"),
            rule("write", &["POST"], "/v1/items/*"),
            rule("me", &["GET"], "/users/@me"),
            rule("comma", &["GET"], "/a,b"),
            rule("star", &["GET"], "/lit/x*y"),
        ]);
        let norm = |p: &str| crate::extract::path::normalize(p).expect("normalizes");
        for (method, raw, want) in [
            ("POST", "/v1/items/42%3Apublish", "publish"),
            ("POST", "/v1/items/42%3apublish", "publish"),
            ("POST", "/v1/items/42:publish", "publish"),
            ("POST", "/v1/items/42", "write"),
            ("GET", "/users/%40me", "me"),
            ("GET", "/a%2Cb", "comma"),
            ("GET", "/lit/x%2Ay", "star"),
        ] {
            assert_eq!(found(&s, method, &norm(raw)).as_deref(), Some(want), "{raw}");
        }
        let s = set(vec![rule("c", &["GET"], "/a,b/**")]);
        assert_eq!(found(&s, "GET", "/a,b/x").as_deref(), Some("c"));
        assert_eq!(found(&s, "GET", "/a"), None);
        assert_eq!(found(&s, "GET", "/b"), None);
    }

    #[test]
    fn within_segment_wildcard_and_literal_metachars() {
        let s = set(vec![rule("json", &[], "/files/*.json"), rule("lit", &[], "/a%5Bb%5D")]);
        assert!(found(&s, "GET", "/files/x.json").is_some());
        assert!(found(&s, "GET", "/files/x/y.json").is_none());
        // Requests spell `[` and `]` escaped (extract::path), and so do rules.
        assert_eq!(found(&s, "GET", "/a%5Bb%5D").as_deref(), Some("lit"));
        assert!(found(&s, "GET", "/ab").is_none());
        assert!(found(&s, "GET", "/a%5B").is_none());
    }

    #[test]
    fn first_match_in_file_order_wins() {
        let s = set(vec![
            rule("specific", &["GET"], "/api/health"),
            rule("all", &[], "/api/**"),
        ]);
        assert_eq!(found(&s, "GET", "/api/health").as_deref(), Some("specific"));
        assert_eq!(found(&s, "POST", "/api/health").as_deref(), Some("all"));
    }

    #[test]
    fn host_patterns_ignore_case_and_port() {
        let mut r = rule("h", &[], "/x");
        r.host = Some("*.example.com".into());
        let s = set(vec![r]);
        assert!(s.find("GET", "API.example.com:8443", "/x").is_some());
        assert!(s.find("GET", "example.com", "/x").is_none());
        assert!(s.find("GET", "evil.com", "/x").is_none());
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("h:80"), "h");
        // A name in brackets is not that name.
        let mut status = rule("status", &[], "/**");
        status.host = Some("status.example.com".into());
        let s = set(vec![status]);
        assert!(s.find("GET", "status.example.com", "/admin").is_some());
        for spelled in [
            "[status.example.com]",
            "[status.example.com]:443",
            "[status.example.com",
        ] {
            assert!(s.find("GET", spelled, "/admin").is_none(), "{spelled}");
        }
    }

    /// HEAD is served by the GET handler in most frameworks (Express, Go's
    /// net/http, Flask, Rails): a GET rule covers it, so a HEAD cannot fall
    /// past the GET rule to a weaker one; a rule naming only HEAD or other
    /// methods does not cover GET.
    #[test]
    fn head_is_checked_as_get() {
        let s = set(vec![
            rule("admin", &["GET"], "/admin/**"),
            rule("head-only", &["HEAD"], "/h"),
            rule("rest", &[], "/**"),
        ]);
        assert_eq!(found(&s, "HEAD", "/admin/export").as_deref(), Some("admin"));
        assert_eq!(found(&s, "GET", "/admin/export").as_deref(), Some("admin"));
        assert_eq!(found(&s, "POST", "/admin/export").as_deref(), Some("rest"));
        assert_eq!(found(&s, "HEAD", "/h").as_deref(), Some("head-only"));
        assert_eq!(found(&s, "GET", "/h").as_deref(), Some("rest"));
        assert!(s.covers_on_some_host("HEAD", "/admin/x"));
        let shadow = set(vec![rule("get", &["GET"], "/a"), rule("head", &["HEAD"], "/a")]);
        assert_eq!(shadow.shadowed(), [("head", "get")]);
        let why: Vec<_> = s.explain("HEAD", "", "/admin/x").into_iter().map(|(_, w)| w).collect();
        assert_eq!(why, [None, Some(Mismatch::Path), None]);
    }

    #[test]
    fn explain_reports_why_each_rule_failed() {
        let mut r3 = rule("host", &[], "/date");
        r3.host = Some("other".into());
        let s = set(vec![rule("path", &[], "/echo"), rule("method", &["POST"], "/date"), r3]);
        let why: Vec<_> = s.explain("GET", "api", "/date").into_iter().map(|(_, w)| w).collect();
        assert_eq!(
            why,
            vec![Some(Mismatch::Path), Some(Mismatch::Method), Some(Mismatch::Host)]
        );
    }

    #[test]
    fn shadowed_rules_are_found() {
        let mut hosted = rule("hosted", &[], "/x");
        hosted.host = Some("a.example".into());
        let s = set(vec![
            rule("all-api", &[], "/api/**"),
            rule("api-get", &["GET"], "/api/{id}"),
            rule("date", &["GET"], "/date"),
            rule("date-post", &["POST"], "/date"),
            rule("date-again", &["GET"], "/date"),
            rule("one", &["GET"], "/files/*"),
            rule("deep", &["GET"], "/files/**"),
            hosted,
            rule("unhosted", &[], "/x"),
        ]);
        assert_eq!(s.shadowed(), vec![("api-get", "all-api"), ("date-again", "date")]);
        let s = set(vec![rule("get-only", &["GET"], "/a"), rule("any", &[], "/a")]);
        assert!(
            s.shadowed().is_empty(),
            "a method-restricted rule does not shadow an any-method rule"
        );
    }

    /// `/api/**` before `/API/Admin/**`: to a router that ignores case,
    /// every spelling of an admin request is the earlier rule's, so the
    /// lint says so; a capital inside `{petId}` is no capital of a route's
    /// (no folded set is built, no per-request cost).
    #[test]
    fn rules_shadowed_for_routers_that_ignore_case_are_found() {
        let s = set(vec![
            rule("api", &[], "/api/**"),
            rule("admin", &[], "/API/Admin/**"),
            rule("reports", &[], "/Reports/**"),
        ]);
        assert!(s.shadowed().is_empty());
        assert_eq!(s.shadowed_ignoring_case(), [("admin", "api")]);
        let s = set(vec![rule("pet", &[], "/pets/{petId}"), rule("all", &[], "/**")]);
        assert!(s.folded.is_none() && s.shadowed_ignoring_case().is_empty());
        assert!(set(vec![rule("escaped", &[], "/a%7Cb")]).folded.is_none());
    }

    #[test]
    fn bad_patterns_are_rejected_with_the_key() {
        for bad in [
            "date",
            "/a/{}",
            "/a/{x",
            "/a/b**",
            "/a?x=1",
            "/a/{x y}",
            "/a/{x*}",
            // Never the form a request is matched in:
            "/a%3Ab",
            "/a%7euser",
            "/caf%c3%a9",
            "/a%zz",
            "/a;b",
            "/a\\b",
            "/a//b",
            // Raw, where requests are matched escaped:
            "/caf\u{e9}",
            "/a b",
            "/a|b",
        ] {
            let err = RuleSet::compile(&[rule("r", &[], bad)]).expect_err(bad).to_string();
            assert!(err.contains("rules[0].path"), "{err}");
        }
        let err = RuleSet::compile(&[rule("r", &[], "/st\u{e4}dte/*")])
            .expect_err("raw")
            .to_string();
        assert!(
            err.contains("(here: \"st%C3%A4dte\")"),
            "the message names the form to write: {err}"
        );
        for good in ["/caf%C3%A9", "/a%3Fb", "/a%20b", "/a/**/b", "/files/*.json", "/files/"] {
            RuleSet::compile(&[rule("r", &[], good)]).expect(good);
        }
    }
}
