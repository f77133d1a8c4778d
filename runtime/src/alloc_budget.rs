//! A memory budget for one piece of work on one thread: rendering a chat template.
//!
//! minijinja's fuel bounds how many instructions a template runs, and [`crate::chat_template`] bounds its output, but a
//! template that doubles a string in a loop (`{% set ns.s = ns.s ~ ns.s %}`) reaches gigabytes in a few dozen
//! instructions, inside one variable. minijinja has no hook to stop that, so the binaries install
//! [`BudgetAllocator`] as their global allocator: it counts what the rendering thread allocates while a budget is
//! set ([`with_budget`]) and, past it, ends the process with a clear message and status 1 instead of letting it
//! run out of memory. Everywhere else it is the system allocator plus one thread-local read.
//!
//! Without the allocator installed (library users, tests), [`with_budget`] only runs the closure.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;

thread_local! {
    /// The budget of this thread in bytes, while one is set.
    static LIMIT: Cell<Option<isize>> = const { Cell::new(None) };
    /// Bytes allocated minus bytes freed on this thread since the budget was set.
    static USED: Cell<isize> = const { Cell::new(0) };
    /// What the work is, for the message.
    static WHAT: Cell<&'static str> = const { Cell::new("") };
}

/// The system allocator, with per-thread budgets (see the module docs).
pub struct BudgetAllocator;

fn charge(bytes: isize) {
    let _ = LIMIT.try_with(|limit| {
        let Some(max) = limit.get() else {
            return;
        };
        let used = USED.with(|u| {
            let used = u.get().saturating_add(bytes);
            u.set(used);
            used
        });
        if used > max {
            // Lift the budget first: exiting allocates.
            limit.set(None);
            let what = WHAT.with(Cell::get);
            let mut err = std::io::stderr();
            let _ = write!(
                err,
                "error: {what} needed more than {} MiB of memory, the limit (text that doubles in a loop?)\n",
                max >> 20
            );
            std::process::exit(1);
        }
    });
}

// SAFETY: every call is forwarded to `System` unchanged; the bookkeeping touches only const-initialised
// thread-locals (no allocation, no destructor).
unsafe impl GlobalAlloc for BudgetAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        charge(layout.size() as isize);
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        charge(layout.size() as isize);
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        charge(-(layout.size() as isize));
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        charge(new_size as isize - layout.size() as isize);
        System.realloc(ptr, layout, new_size)
    }
}

/// Runs `work` on this thread with at most `bytes` of new allocations alive at once (when [`BudgetAllocator`] is
/// the global allocator). `what` names the work in the message.
pub fn with_budget<R>(bytes: usize, what: &'static str, work: impl FnOnce() -> R) -> R {
    struct Reset(Option<isize>, isize, &'static str);
    impl Drop for Reset {
        fn drop(&mut self) {
            LIMIT.with(|l| l.set(self.0));
            USED.with(|u| u.set(self.1));
            WHAT.with(|w| w.set(self.2));
        }
    }
    let _reset = Reset(
        LIMIT.with(Cell::get),
        USED.with(Cell::get),
        WHAT.with(Cell::get),
    );
    WHAT.with(|w| w.set(what));
    USED.with(|u| u.set(0));
    LIMIT.with(|l| l.set(Some(bytes.min(isize::MAX as usize) as isize)));
    work()
}
