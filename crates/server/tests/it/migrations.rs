//! A lint over `migrations/`: a `NOT NULL` column added without a `DEFAULT` to a table an
//! earlier migration created fails as soon as that table has rows, i.e. in production
//! and not in a test's empty database.

use std::collections::HashMap;
use std::path::Path;

use regex::Regex;

/// The migrations in the order sqlx applies them: `(file name, SQL)`.
fn migrations() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .filter(|(name, _)| name.ends_with(".sql"))
        .collect();
    files.sort();
    files
}

/// The SQL's statements, without comments and without dollar-quoted bodies (`DO $$ … $$`
/// blocks hold semicolons of their own and add no columns).
fn statements(sql: &str) -> Vec<String> {
    let dollar_quoted = Regex::new(r"(?s)\$([A-Za-z_]*)\$.*?\$([A-Za-z_]*)\$").unwrap();
    let comment = Regex::new(r"--[^\n]*").unwrap();
    let sql = comment.replace_all(sql, "");
    let sql = dollar_quoted.replace_all(&sql, "''");
    sql.split(';')
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty())
        .collect()
}

/// Splits at commas outside parentheses (a `CHECK (a, b)` stays whole), and drops
/// what is inside parentheses from the pieces returned alongside, so `NOT NULL` inside
/// a `CHECK (x IS NOT NULL)` is not taken for the column's own.
fn top_level(text: &str) -> Vec<(String, String)> {
    let (mut parts, mut whole, mut outer, mut depth) =
        (Vec::new(), String::new(), String::new(), 0);
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push((std::mem::take(&mut whole), std::mem::take(&mut outer)));
                continue;
            }
            _ => {}
        }
        whole.push(c);
        if depth == 0 && c != ')' {
            outer.push(c);
        }
    }
    parts.push((whole, outer));
    parts
}

/// Every `ADD COLUMN … NOT NULL` without a `DEFAULT` on a table created by an earlier
/// migration, as a message saying where and what to do instead.
fn lint(migrations: &[(String, String)]) -> Vec<String> {
    let create = Regex::new(r"(?i)^CREATE TABLE (?:IF NOT EXISTS )?(\w+)").unwrap();
    let alter = Regex::new(r"(?i)^ALTER TABLE (?:IF EXISTS )?(?:ONLY )?(\w+) (.*)$").unwrap();
    let add = Regex::new(r"(?i)^\s*ADD (?:COLUMN )?(?:IF NOT EXISTS )?(\w+)").unwrap();
    let not_null = Regex::new(r"(?i)\bNOT NULL\b").unwrap();
    let fills_rows = Regex::new(r"(?i)\b(DEFAULT|GENERATED)\b").unwrap();
    let mut created_by: HashMap<String, &str> = HashMap::new();
    let mut problems = Vec::new();
    for (file, sql) in migrations {
        let mut created_here = Vec::new();
        for statement in statements(sql) {
            if let Some(table) = create.captures(&statement) {
                created_here.push(table[1].to_lowercase());
                continue;
            }
            let Some(altered) = alter.captures(&statement) else {
                continue;
            };
            let table = altered[1].to_lowercase();
            let Some(earlier) = created_by.get(&table) else {
                // Created in this very migration (still empty) or not by a migration.
                continue;
            };
            for (action, outer) in top_level(&altered[2]) {
                let Some(column) = add.captures(&action) else {
                    continue;
                };
                if not_null.is_match(&outer) && !fills_rows.is_match(&outer) {
                    problems.push(format!(
                        "{file}: `ALTER TABLE {table} ADD COLUMN {column} … NOT NULL` has no \
                         DEFAULT, so it fails once `{table}` (created by {earlier}) has rows. \
                         Give it a DEFAULT, or add it nullable, backfill it, then SET NOT NULL.",
                        column = &column[1],
                    ));
                }
            }
        }
        for table in created_here {
            created_by.insert(table, file);
        }
    }
    problems
}

#[test]
fn no_migration_adds_a_not_null_column_without_a_default_to_an_existing_table() {
    let migrations = migrations();
    assert!(
        migrations.iter().any(|(_, sql)| sql.contains("ADD COLUMN")),
        "the lint should see the migrations that add columns: {:?}",
        migrations.iter().map(|(name, _)| name).collect::<Vec<_>>()
    );
    let problems = lint(&migrations);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_lint_refuses_a_not_null_column_without_a_default() {
    let sample = |name: &str, sql: &str| (name.to_owned(), sql.to_owned());
    let migrations = [
        sample(
            "0001_widgets.sql",
            "CREATE TABLE widgets (id BIGINT PRIMARY KEY);
             -- Same migration: the table is still empty, so this is fine.
             ALTER TABLE widgets ADD COLUMN name TEXT NOT NULL;",
        ),
        sample(
            "0002_colours.sql",
            "DO $$ BEGIN PERFORM 1; END $$;
             ALTER TABLE widgets
                 ADD COLUMN shade TEXT CHECK (shade IS NOT NULL OR shade IS NULL),
                 ADD COLUMN size INTEGER NOT NULL DEFAULT 0 CHECK (size >= 0),
                 ADD COLUMN colour TEXT NOT NULL CHECK (colour IN ('red', 'blue'));
             CREATE TABLE gadgets (id BIGINT PRIMARY KEY);
             ALTER TABLE gadgets ADD COLUMN weight INTEGER NOT NULL;",
        ),
        sample(
            "0003_more.sql",
            "alter table widgets add column price numeric not null;",
        ),
    ];
    insta::assert_snapshot!(lint(&migrations).join("\n"), @r"
    0002_colours.sql: `ALTER TABLE widgets ADD COLUMN colour … NOT NULL` has no DEFAULT, so it fails once `widgets` (created by 0001_widgets.sql) has rows. Give it a DEFAULT, or add it nullable, backfill it, then SET NOT NULL.
    0003_more.sql: `ALTER TABLE widgets ADD COLUMN price … NOT NULL` has no DEFAULT, so it fails once `widgets` (created by 0001_widgets.sql) has rows. Give it a DEFAULT, or add it nullable, backfill it, then SET NOT NULL.
    ");
}
