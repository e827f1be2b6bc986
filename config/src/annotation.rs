//! The syntax the compromise and detection pod annotations share: `off`, or comma-separated
//! `key=value` pairs.

/// `value` as such an annotation: `None` for `off`, else its pairs in order, each key and value
/// trimmed; a part that is not `key=value` is an error naming it. Empty parts are skipped.
pub(crate) fn pairs(value: &str) -> Option<impl Iterator<Item = Result<(&str, &str), String>>> {
    let value = value.trim();
    (value != "off").then(|| {
        value
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|pair| {
                pair.split_once('=')
                    .map(|(key, v)| (key.trim(), v.trim()))
                    .ok_or_else(|| format!("{pair:?}: expected key=value or \"off\""))
            })
    })
}

/// `settings` with annotation `value` applied: `off` turns the switch that `off` names false,
/// each pair goes through `set`, and the result is checked by `validate`; the error is the
/// annotation's reason (`validate`'s error as text).
pub(crate) fn applied<S: Clone, E: std::fmt::Display>(
    settings: &S,
    value: &str,
    off: fn(&mut S) -> &mut bool,
    set: fn(&mut S, &str, &str) -> Result<(), String>,
    validate: fn(&S) -> Result<(), E>,
) -> Result<S, String> {
    let mut s = settings.clone();
    let Some(pairs) = pairs(value) else {
        *off(&mut s) = false;
        return Ok(s);
    };
    for pair in pairs {
        let (key, v) = pair?;
        set(&mut s, key, v)?;
    }
    validate(&s).map_err(|e| e.to_string())?;
    Ok(s)
}

/// Checks that `err` refuses each annotation value of `cases` with a reason containing its text.
#[cfg(test)]
pub(crate) fn assert_refused(err: impl Fn(&str) -> String, cases: &[(&str, &str)]) {
    for (value, reason) in cases {
        let got = err(value);
        assert!(got.contains(reason), "{value}: {got}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_pairs_and_parts_that_are_not_pairs() {
        assert!(pairs(" off ").is_none());
        let got: Vec<_> = pairs(" a = 1 ,, b=|x| ").unwrap().collect();
        assert_eq!(got, [Ok(("a", "1")), Ok(("b", "|x|"))]);
        let got: Vec<_> = pairs("a=1,oops").unwrap().collect();
        assert_eq!(
            got,
            [
                Ok(("a", "1")),
                Err("\"oops\": expected key=value or \"off\"".into())
            ]
        );
    }
}
