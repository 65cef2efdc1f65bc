//! Where entries come from: the binary, directories, registries.

use std::path::Path;

use crate::entry::{Entry, EntryError, Origin};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
}

/// Every known entry, in the order they were added (embedded first).
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    entries: Vec<Entry>,
}

impl Catalog {
    /// The entries shipped inside Berth.
    pub fn embedded() -> Catalog {
        let mut catalog = Catalog::default();
        for (key, text) in embedded::EMBEDDED {
            // Every embedded entry is checked by the crate's tests; one that
            // still fails here is skipped rather than taking the CLI down.
            match Entry::parse(text, Origin::Embedded, Some(key)) {
                Ok(entry) => catalog.entries.push(entry),
                Err(e) => tracing::error!("embedded catalog entry {key}: {e}"),
            }
        }
        catalog
    }

    /// Adds every `*.json` file of `dir` (an operator's own entries); an
    /// entry whose key is already known replaces the earlier one.
    pub fn add_dir(&mut self, dir: &Path) -> Result<Vec<EntryError>, EntryError> {
        let read = std::fs::read_dir(dir).map_err(|e| EntryError {
            origin: dir.display().to_string(),
            reason: format!("cannot read the catalog directory: {e}"),
        })?;
        let mut paths: Vec<_> = read
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        let mut skipped = Vec::new();
        for path in paths {
            match Entry::load_file(&path) {
                Ok(entry) => self.insert(entry, true),
                Err(e) => skipped.push(e),
            }
        }
        Ok(skipped)
    }

    /// Adds entries (from a registry); they never replace a known key and are
    /// reachable by their full `name` when their key is taken.
    pub fn add_entries(&mut self, entries: Vec<Entry>) {
        for entry in entries {
            self.insert(entry, false);
        }
    }

    fn insert(&mut self, entry: Entry, replace: bool) {
        match self.entries.iter().position(|e| e.key == entry.key) {
            Some(i) if replace => self.entries[i] = entry,
            _ => self.entries.push(entry),
        }
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entry called `name`: its catalog key, else its full server.json name.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.key == name)
            .or_else(|| self.entries.iter().find(|e| e.server.name == name))
    }

    pub fn search<'a>(&'a self, word: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries.iter().filter(move |e| e.matches(word))
    }
}

impl Entry {
    /// Reads one `server.json` file; its stem is the key unless the entry names one.
    pub fn load_file(path: &Path) -> Result<Entry, EntryError> {
        let text = std::fs::read_to_string(path).map_err(|e| EntryError {
            origin: path.display().to_string(),
            reason: format!("cannot read: {e}"),
        })?;
        let stem = path.file_stem().and_then(|s| s.to_str());
        // `server.json` itself says nothing about a key: derive it from the name.
        let stem = stem.filter(|s| *s != "server");
        Entry::parse(&text, Origin::File(path.to_path_buf()), stem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_entries_all_load() {
        let catalog = Catalog::embedded();
        for (key, _) in embedded::EMBEDDED {
            assert!(
                catalog.get(key).is_some(),
                "embedded entry {key} did not load"
            );
        }
    }

    #[test]
    fn a_directory_entry_replaces_an_embedded_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("demo.json"),
            r#"{"name":"com.example/demo","description":"Ours","version":"9.9.9","_meta":{"io.github.berth-mcp/hosting":{"key":"demo","builtin":"demo"}}}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("broken.json"), "{").unwrap();
        let mut catalog = Catalog::embedded();
        let skipped = catalog.add_dir(dir.path()).unwrap();
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert!(skipped[0].to_string().contains("not valid JSON"));
        assert_eq!(catalog.get("demo").unwrap().server.version, "9.9.9");
        assert_eq!(
            catalog.entries().iter().filter(|e| e.key == "demo").count(),
            1
        );
    }
}
