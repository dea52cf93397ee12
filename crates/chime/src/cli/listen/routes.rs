//! `--forward-to` routes: `PATTERN=URL` rules tried in order, the first whose pattern matches
//! the event's name wins, and a plain `URL` for everything else, as in
//! `--forward-to 'order.*=http://localhost:3000/orders' --forward-to http://localhost:3000/hooks`.

use crate::model::Subscription;

#[derive(Debug)]
pub(super) struct Routes {
    rules: Vec<(String, Subscription, reqwest::Url)>,
    default: Option<reqwest::Url>,
}

fn url(text: &str, flag: &str) -> Result<reqwest::Url, String> {
    reqwest::Url::parse(text)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
        .ok_or_else(|| {
            format!("--forward-to {flag:?}: {text:?} is not an http(s) URL such as http://localhost:3000/webhook")
        })
}

impl Routes {
    /// The routes given, or `None` without any. A value that starts with `http://` or
    /// `https://` is the default (a URL may hold `=` in its query); anything else is
    /// `PATTERN=URL`.
    pub(super) fn parse(values: &[String]) -> Result<Option<Self>, String> {
        if values.is_empty() {
            return Ok(None);
        }
        let mut routes = Self {
            rules: Vec::new(),
            default: None,
        };
        for v in values {
            if v.starts_with("http://") || v.starts_with("https://") {
                if routes.default.is_some() {
                    return Err("--forward-to: give one plain URL (the default) at most".into());
                }
                routes.default = Some(url(v, v)?);
                continue;
            }
            let (pattern, target) = v
                .split_once('=')
                .ok_or_else(|| format!("--forward-to {v:?} is neither a URL nor PATTERN=URL"))?;
            let sub = Subscription::parse(&[pattern.to_owned()])
                .map_err(|e| format!("--forward-to {v:?}: {e}"))?;
            routes
                .rules
                .push((pattern.to_owned(), sub, url(target, v)?));
        }
        Ok(Some(routes))
    }

    /// Where a webhook of this event goes: the first matching rule, else the default.
    pub(super) fn pick(&self, event: Option<&str>) -> Option<&reqwest::Url> {
        event
            .and_then(|name| {
                self.rules
                    .iter()
                    .find(|(_, sub, _)| sub.matches(name))
                    .map(|(_, _, u)| u)
            })
            .or(self.default.as_ref())
    }

    /// One line per route, for the banner.
    pub(super) fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .rules
            .iter()
            .map(|(p, _, u)| format!("  forwarding {p} to {u}"))
            .collect();
        if let Some(d) = &self.default {
            let what = if self.rules.is_empty() {
                "forwarding to"
            } else {
                "forwarding the rest to"
            };
            out.push(format!("  {what} {d}"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(v: &[&str]) -> Routes {
        Routes::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap()
            .unwrap()
    }

    #[test]
    fn the_first_matching_rule_wins_then_the_default() {
        let r = routes(&[
            "order.created=http://localhost:3000/new-orders",
            "order.*=http://localhost:3000/orders",
            "http://localhost:3000/hooks?x=1",
        ]);
        let at = |e: Option<&str>| r.pick(e).map(|u| u.path().to_owned());
        assert_eq!(at(Some("order.created")).as_deref(), Some("/new-orders"));
        assert_eq!(at(Some("order.paid")).as_deref(), Some("/orders"));
        assert_eq!(at(Some("user.created")).as_deref(), Some("/hooks"));
        assert_eq!(at(None).as_deref(), Some("/hooks"));
        let only = routes(&["order.*=http://localhost:3000/orders"]);
        assert!(only.pick(Some("user.created")).is_none());
        for bad in [
            &["order.*"][..],
            &["order.*=ftp://x"],
            &["http://a", "http://b"],
            &["order.*.v2=http://a"],
        ] {
            let v: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
            assert!(Routes::parse(&v).is_err(), "{bad:?}");
        }
        assert!(Routes::parse(&[]).unwrap().is_none());
    }
}
