//! `${secret:NAME}` references in configuration values.

/// What [`expand`] returns for a reference the lookup doesn't know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("secret `{0}` is not in the secrets store; add it with `berth secret set {0}`")]
pub struct MissingSecret(pub String);

const OPEN: &str = "${secret:";
const ESCAPE: &str = "$${";

/// One piece of a template: literal text or the name inside a reference.
#[derive(Debug, PartialEq, Eq)]
enum Segment<'a> {
    Text(&'a str),
    Reference(&'a str),
}

/// Splits a template into text and references, left to right.
///
/// `$${` becomes the text `${`, so `$${secret:X}` is the literal `${secret:X}`.
/// Whatever stands between `${secret:` and the next `}` is the name, even one
/// the store would reject: a typo then fails loudly as a missing secret
/// instead of reaching a server as text. A `${secret:` with no closing `}` is
/// left as text.
fn segments(template: &str) -> impl Iterator<Item = Segment<'_>> {
    let mut rest = template;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        if let Some(after) = rest.strip_prefix(ESCAPE) {
            rest = after;
            return Some(Segment::Text("${"));
        }
        if let Some(after) = rest.strip_prefix(OPEN)
            && let Some(end) = after.find('}')
        {
            rest = &after[end + 1..];
            return Some(Segment::Reference(&after[..end]));
        }
        // Plain text runs up to the next `$`, which may start something; a
        // `$` at the front started nothing above, so it is text by itself.
        let end = match rest.find('$') {
            Some(0) => 1,
            Some(i) => i,
            None => rest.len(),
        };
        let (text, after) = rest.split_at(end);
        rest = after;
        Some(Segment::Text(text))
    })
}

/// Names referenced as `${secret:NAME}` in a template, in order, deduplicated.
pub fn references(template: &str) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for segment in segments(template) {
        if let Segment::Reference(name) = segment
            && !names.contains(&name)
        {
            names.push(name);
        }
    }
    names
}

/// Replaces every `${secret:NAME}` in `template` with `lookup(NAME)`. `$${` is an escape for a literal `${`.
///
/// Returns Err(name) for the first name the lookup doesn't know. Text with
/// neither a reference nor an escape is returned unchanged, so `$HOME` or
/// `${HOME}` pass through untouched.
pub fn expand(
    template: &str,
    mut lookup: impl FnMut(&str) -> Option<String>,
) -> Result<String, MissingSecret> {
    let mut out = String::with_capacity(template.len());
    for segment in segments(template) {
        match segment {
            Segment::Text(text) => out.push_str(text),
            Segment::Reference(name) => match lookup(name) {
                Some(value) => out.push_str(&value),
                None => return Err(MissingSecret(name.to_owned())),
            },
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("t0k".to_owned()),
            "db.password" => Some("hunter2".to_owned()),
            _ => None,
        }
    }

    #[test]
    fn text_without_references_is_unchanged() {
        for text in [
            "",
            "plain",
            "$HOME and ${HOME} and $",
            "$$ cost $5",
            "${secret:unclosed",
            "ünïcödé $ ✓",
        ] {
            assert_eq!(expand(text, known).unwrap(), text);
            assert!(references(text).is_empty(), "{text}");
        }
    }

    #[test]
    fn expands_multiple_references() {
        let template = "Bearer ${secret:TOKEN}; pw=${secret:db.password}; again ${secret:TOKEN}";
        assert_eq!(
            expand(template, known).unwrap(),
            "Bearer t0k; pw=hunter2; again t0k"
        );
        assert_eq!(references(template), ["TOKEN", "db.password"]);
    }

    #[test]
    fn whole_value_reference() {
        assert_eq!(expand("${secret:TOKEN}", known).unwrap(), "t0k");
    }

    #[test]
    fn escape_gives_a_literal_dollar_brace() {
        let template = "$${secret:TOKEN} is ${secret:TOKEN}, $${HOME} stays";
        assert_eq!(
            expand(template, known).unwrap(),
            "${secret:TOKEN} is t0k, ${HOME} stays"
        );
        assert_eq!(references(template), ["TOKEN"]);
        assert!(references("$${secret:TOKEN}").is_empty());
    }

    #[test]
    fn unknown_name_is_reported_first_in_order() {
        let err = expand("${secret:TOKEN} ${secret:NOPE} ${secret:ALSO_NOPE}", known).unwrap_err();
        assert_eq!(err, MissingSecret("NOPE".to_owned()));
        assert_eq!(
            err.to_string(),
            "secret `NOPE` is not in the secrets store; add it with `berth secret set NOPE`"
        );
    }

    #[test]
    fn malformed_names_are_still_references() {
        // So that a typo fails instead of being sent as text.
        assert_eq!(references("${secret:} ${secret:a b}"), ["", "a b"]);
        assert!(expand("x ${secret:a b}", known).is_err());
    }

    #[test]
    fn lookup_sees_only_referenced_names() {
        let mut asked = Vec::new();
        let out = expand("a${secret:TOKEN}b", |name| {
            asked.push(name.to_owned());
            known(name)
        })
        .unwrap();
        assert_eq!(out, "at0kb");
        assert_eq!(asked, ["TOKEN"]);
    }
}
