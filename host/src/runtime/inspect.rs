//! Reading a component before compiling it: what it imports and how much of the instance pool
//! one instance of it takes.
//!
//! Both come from the binary alone (wasmparser), so a module that imports what the sandbox does
//! not grant, or that could never fit the node's pool, is refused in milliseconds with every
//! reason at once, instead of after a compile that takes seconds for an interpreter.

use wasmparser::{
    ComponentExternalKind, ComponentInstance, ComponentOuterAliasKind, Instance, Parser, Payload,
};

/// What one instance of a component needs from the pooling allocator, counted the way wasmtime
/// counts it: every core module instantiated (transitively, through nested components), with
/// the memories and tables those modules define.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Footprint {
    /// Core module instances.
    pub core_instances: u32,
    /// Linear memories defined by those modules.
    pub memories: u32,
    /// Tables defined by those modules.
    pub tables: u32,
}

impl Footprint {
    fn add(&mut self, other: Footprint) {
        self.core_instances = self.core_instances.saturating_add(other.core_instances);
        self.memories = self.memories.saturating_add(other.memories);
        self.tables = self.tables.saturating_add(other.tables);
    }
}

/// A component as read from its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ComponentShape {
    /// The names of the component's top-level imports other than types (e.g.
    /// `wasi:io/poll@0.2.9`).
    pub imports: Vec<String>,
    /// What one instance takes from the pool.
    pub footprint: Footprint,
}

/// One level of nesting while walking the binary: a component, or a core module inside one.
enum Frame {
    Component {
        /// Footprint of each entry of the core module index space (`None`: unknown, e.g. imported).
        modules: Vec<Option<Footprint>>,
        /// Footprint of each entry of the component index space.
        components: Vec<Option<Footprint>>,
        /// The running total for one instance of this component.
        total: Footprint,
        imports: Vec<String>,
    },
    Module {
        memories: u32,
        tables: u32,
    },
}

/// Reads `bytes` (already known to start like a component).
pub fn inspect(bytes: &[u8]) -> Result<ComponentShape, String> {
    let mut stack: Vec<Frame> = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| e.to_string())?;
        match payload {
            Payload::Version { encoding, .. } => match encoding {
                wasmparser::Encoding::Component => stack.push(Frame::Component {
                    modules: vec![],
                    components: vec![],
                    total: Footprint::default(),
                    imports: vec![],
                }),
                wasmparser::Encoding::Module => stack.push(Frame::Module {
                    memories: 0,
                    tables: 0,
                }),
            },
            Payload::MemorySection(section) => {
                if let Some(Frame::Module { memories, .. }) = stack.last_mut() {
                    *memories = memories.saturating_add(section.count());
                }
            }
            Payload::TableSection(section) => {
                if let Some(Frame::Module { tables, .. }) = stack.last_mut() {
                    *tables = tables.saturating_add(section.count());
                }
            }
            Payload::ComponentImportSection(section) => {
                if let Some(Frame::Component {
                    imports,
                    components,
                    modules,
                    ..
                }) = stack.last_mut()
                {
                    for import in section {
                        let import = import.map_err(|e| e.to_string())?;
                        // Types a world `use`s are imported too; they name no capability.
                        if !matches!(import.ty, wasmparser::ComponentTypeRef::Type(_)) {
                            imports.push(import.name.name.to_owned());
                        }
                        match import.ty {
                            wasmparser::ComponentTypeRef::Module(_) => modules.push(None),
                            wasmparser::ComponentTypeRef::Component(_) => components.push(None),
                            _ => {}
                        }
                    }
                }
            }
            Payload::InstanceSection(section) => {
                if let Some(Frame::Component { modules, total, .. }) = stack.last_mut() {
                    for instance in section {
                        if let Instance::Instantiate { module_index, .. } =
                            instance.map_err(|e| e.to_string())?
                        {
                            total.core_instances = total.core_instances.saturating_add(1);
                            if let Some(Some(module)) = modules.get(module_index as usize) {
                                total.add(*module);
                            }
                        }
                    }
                }
            }
            Payload::ComponentInstanceSection(section) => {
                if let Some(Frame::Component {
                    components, total, ..
                }) = stack.last_mut()
                {
                    for instance in section {
                        if let ComponentInstance::Instantiate {
                            component_index, ..
                        } = instance.map_err(|e| e.to_string())?
                            && let Some(Some(component)) = components.get(component_index as usize)
                        {
                            total.add(*component);
                        }
                    }
                }
            }
            Payload::ComponentAliasSection(section) => {
                if let Some(Frame::Component {
                    modules,
                    components,
                    ..
                }) = stack.last_mut()
                {
                    for alias in section {
                        match alias.map_err(|e| e.to_string())? {
                            wasmparser::ComponentAlias::InstanceExport {
                                kind: ComponentExternalKind::Module,
                                ..
                            }
                            | wasmparser::ComponentAlias::Outer {
                                kind: ComponentOuterAliasKind::CoreModule,
                                ..
                            } => modules.push(None),
                            wasmparser::ComponentAlias::InstanceExport {
                                kind: ComponentExternalKind::Component,
                                ..
                            }
                            | wasmparser::ComponentAlias::Outer {
                                kind: ComponentOuterAliasKind::Component,
                                ..
                            } => components.push(None),
                            _ => {}
                        }
                    }
                }
            }
            Payload::End(_) => {
                let finished = stack.pop().ok_or("unbalanced sections")?;
                match (finished, stack.last_mut()) {
                    (
                        Frame::Module { memories, tables },
                        Some(Frame::Component { modules, .. }),
                    ) => {
                        modules.push(Some(Footprint {
                            core_instances: 0,
                            memories,
                            tables,
                        }));
                    }
                    (Frame::Component { total, .. }, Some(Frame::Component { components, .. })) => {
                        components.push(Some(total))
                    }
                    (Frame::Component { total, imports, .. }, None) => {
                        return Ok(ComponentShape {
                            imports,
                            footprint: total,
                        });
                    }
                    (Frame::Module { .. }, _) => {
                        return Err("a core module, not a component".into());
                    }
                    (Frame::Component { .. }, Some(Frame::Module { .. })) => {
                        return Err("a component nested in a core module".into());
                    }
                }
            }
            _ => {}
        }
    }
    Err("the component ends early".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rust_guest_is_small_and_imports_wasi_and_the_runtime() {
        let bytes = hatchery_guests::read(hatchery_guests::HELLO);
        let shape = inspect(&bytes).expect("parses");
        assert!(
            shape
                .imports
                .iter()
                .any(|i| i.starts_with("wasi:cli/stdout@")),
            "{:?}",
            shape.imports
        );
        assert!(
            shape
                .imports
                .iter()
                .any(|i| i.starts_with("hatchery:task/runtime@")),
            "{:?}",
            shape.imports
        );
        // wit-component's shape for a Rust guest: the main module, the WASI adapter and the
        // shim/fixup pair; one memory, and the shim's indirect-call table.
        assert!(
            (2..=4).contains(&shape.footprint.core_instances),
            "{:?}",
            shape.footprint
        );
        assert_eq!(shape.footprint.memories, 1, "{:?}", shape.footprint);
        assert!(shape.footprint.tables >= 1, "{:?}", shape.footprint);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(inspect(b"\0asm\x0d\0\x01\0\xff\xff").is_err());
        let bytes = hatchery_guests::read(hatchery_guests::HELLO);
        assert!(inspect(&bytes[..bytes.len() / 2]).is_err());
    }
}
