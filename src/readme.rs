//! The README's code is real code: each ```rust block that starts with
//! `// examples/NAME.rs…` must be an excerpt of that example, line for line and in order
//! (indentation aside; `// …` marks an elision). The examples themselves compile and run
//! in CI, so the README cannot drift from working code.

use std::path::Path;

/// `(source, lines)` of each README block that names its example.
fn excerpts(readme: &str) -> Vec<(String, Vec<&str>)> {
    let mut blocks = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "```rust" {
            continue;
        }
        let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
        let Some(source) = body.first().and_then(|l| l.trim().strip_prefix("// ")) else {
            continue;
        };
        if let Some(path) = source
            .split(',')
            .next()
            .filter(|p| p.starts_with("examples/"))
        {
            blocks.push((path.to_owned(), body[1..].to_vec()));
        }
    }
    blocks
}

#[test]
fn readme_code_blocks_are_excerpts_of_the_examples() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let blocks = excerpts(&readme);
    assert!(
        blocks.len() >= 2,
        "the README's two code sections name their examples"
    );
    for (path, lines) in blocks {
        let source = std::fs::read_to_string(root.join(&path))
            .unwrap_or_else(|e| panic!("README quotes {path}, which cannot be read: {e}"));
        let mut source_lines = source.lines().map(str::trim);
        for line in lines.iter().map(|l| l.trim()) {
            if line.is_empty() || line == "// …" {
                continue;
            }
            assert!(
                source_lines.any(|s| s == line),
                "README line {line:?} is not in {path} (or not in this order); copy the excerpt from the example again"
            );
        }
    }
}

/// Every Rust source file under `dir`, concatenated, with `\"` read as `"` so messages
/// built with `format!` compare as they read.
fn source_text(dir: &Path, out: &mut String) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            source_text(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            out.push_str(&text.replace("\\\"", "\""));
        }
    }
}

/// The literal pieces of a quoted message: the text between `{…}` placeholders, trimmed
/// of spaces and punctuation at the ends; pieces shorter than 6 characters say nothing.
fn fragments(message: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = message;
    loop {
        let (piece, tail) = match rest.find('{') {
            Some(open) => match rest[open..].find('}') {
                Some(close) => (&rest[..open], Some(&rest[open + close + 1..])),
                None => (rest, None),
            },
            None => (rest, None),
        };
        let piece = piece.trim_matches(|c: char| c.is_whitespace() || ";:,.()".contains(c));
        if piece.chars().count() >= 6 {
            pieces.push(piece);
        }
        match tail {
            Some(tail) => rest = tail,
            None => return pieces,
        }
    }
}

#[test]
fn troubleshooting_quotes_only_messages_that_exist_in_the_source() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let page = std::fs::read_to_string(root.join("docs/troubleshooting.md"))
        .expect("docs/troubleshooting.md");
    let mut source = String::new();
    source_text(&root.join("crates"), &mut source);
    let quoted: Vec<&str> = page.lines().filter_map(|l| l.strip_prefix("> ")).collect();
    assert!(quoted.len() >= 20, "the page quotes the gateway's messages");
    for message in quoted {
        for piece in fragments(message) {
            assert!(
                source.contains(piece),
                "docs/troubleshooting.md quotes {message:?}, but {piece:?} is in no source file; copy the message from the code again"
            );
        }
    }
}

#[test]
fn fragments_split_at_placeholders_and_trim_punctuation() {
    assert_eq!(
        fragments("rate limit: {dim} {scope} exceeded (limit {}); retry after {…} s"),
        ["rate limit", "exceeded (limit", "retry after"]
    );
}
