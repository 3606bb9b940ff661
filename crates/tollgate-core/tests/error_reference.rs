//! `docs/errors.md` shows the error table; this test keeps it equal to
//! `tollgate_core::error::ERROR_TABLE`.
//!
//! The table sits between the markers `<!-- error-table:start -->` and
//! `<!-- error-table:end -->`. When the core table changes, regenerate the page with
//!
//! ```sh
//! TOLLGATE_BLESS=1 cargo test -p tollgate-core --test error_reference
//! ```
//!
//! or paste the table the failure message prints.

use std::path::{Path, PathBuf};

use tollgate_core::error::{ERROR_TABLE, ErrorClass};

const START: &str = "<!-- error-table:start -->";
const END: &str = "<!-- error-table:end -->";

/// The page, relative to this crate.
fn page() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/errors.md")
}

/// The markdown table for `rows`, one line per row, ending with a newline.
fn render_table(rows: &[ErrorClass]) -> String {
    let mut out = String::from(
        "| HTTP status | Anthropic `error.type` | OpenAI status | OpenAI `type` | OpenAI `code` | domain | retryable | who is responsible and what to do |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for c in rows {
        let code = match c.openai_code {
            Some(code) => format!("`{code}`"),
            None => "`null`".to_owned(),
        };
        out.push_str(&format!(
            "| {} | `{}` | {} | `{}` | {} | {} | {} | {} |\n",
            c.status,
            c.anthropic_type,
            c.openai_status,
            c.openai_type,
            code,
            c.domain.as_str(),
            if c.retryable { "yes" } else { "no" },
            c.hint.replace('|', "\\|"),
        ));
    }
    out
}

/// What goes between the markers: a newline, then the table.
fn render_section() -> String {
    format!("\n{}", render_table(ERROR_TABLE))
}

/// Byte range of the text between the markers, if both are present in order.
fn section_range(text: &str) -> Option<std::ops::Range<usize>> {
    let start = text.find(START)? + START.len();
    let end = start + text[start..].find(END)?;
    Some(start..end)
}

#[test]
fn error_reference_page_matches_the_core_table() {
    let path = page();
    let expected = render_section();
    let bless = std::env::var_os("TOLLGATE_BLESS").is_some_and(|v| v == "1");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if bless => {
            eprintln!("{}: {e}; creating it", path.display());
            String::new()
        }
        Err(e) => panic!(
            "cannot read {}: {e}\n\nCreate it with the table between {START} and {END}:\n\n{START}{expected}{END}\n",
            path.display()
        ),
    };

    let range = section_range(&text);
    let actual = range.clone().map(|r| text[r].replace("\r\n", "\n"));
    if actual.as_deref() == Some(expected.as_str()) {
        return;
    }

    if bless {
        let updated = match range {
            Some(r) => format!("{}{expected}{}", &text[..r.start], &text[r.end..]),
            None => format!("{text}\n{START}{expected}{END}\n"),
        };
        if let Err(e) = std::fs::write(&path, updated) {
            panic!("cannot write {}: {e}", path.display());
        }
        eprintln!("{}: error table regenerated", path.display());
        return;
    }

    let problem = match actual {
        None => format!("the markers {START} … {END} are missing (or out of order)"),
        Some(_) => "the table between the markers differs from ERROR_TABLE".to_owned(),
    };
    panic!(
        "{}: {problem}.\n\
         Regenerate it with `TOLLGATE_BLESS=1 cargo test -p tollgate-core --test error_reference`,\n\
         or paste this between the markers:\n\n{START}{expected}{END}\n",
        path.display()
    );
}

#[test]
fn table_rendering_is_one_line_per_row() {
    let table = render_table(ERROR_TABLE);
    assert_eq!(table.lines().count(), ERROR_TABLE.len() + 2);
    for line in table.lines() {
        // Eight columns: nine unescaped pipes.
        let pipes = line.replace("\\|", "").matches('|').count();
        assert_eq!(pipes, 9, "{line}");
    }
}
