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
