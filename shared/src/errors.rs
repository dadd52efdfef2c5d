//! Errors on one line: the error with its causes, for log lines and action errors.

/// `e` and each of its sources not already in the text, joined by ": ", on one line (ssh's
/// own message, e.g. "Host key verification failed"; the AWS SDK's cause behind "service error").
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let m = s.to_string();
        if !m.trim().is_empty() && !msg.contains(m.trim()) {
            msg.push_str(": ");
            msg.push_str(m.trim());
        }
        src = s.source();
    }
    msg.replace('\n', " ").trim().to_string()
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn causes_join_on_one_line_once() {
        let e = Outer(std::io::Error::other("inner\nline"));
        assert_eq!(super::chain(&e), "outer: inner line");
        let same = Outer(std::io::Error::other("outer"));
        assert_eq!(super::chain(&same), "outer");
    }
}
