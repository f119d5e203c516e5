//! Time slices for query operators: every operator of a served query gives its
//! thread back after [`SLICE`] of continuous work.
//!
//! Tokio cannot preempt a task, and DataFusion yields only through tokio's
//! cooperative budget at leaves and exchanges (`EnsureCooperative`). An operator
//! that emits many batches per input batch (a cross join) feeding one that loops
//! over its input (a sort, a TopK) then runs for minutes inside one poll. Measured
//! before this module: a 10^10-row cross join under `ORDER BY .. LIMIT` ignored a
//! 3 s deadline for 9 minutes; with tokio's budget at every operator it stopped
//! in time, but each poll still ran ~150 ms (debug build), and a `SELECT 1` of
//! another client waited 1.1 s behind it.
//!
//! [`TimeSlice`] (a physical optimizer rule, run last) puts a [`TimeSliceExec`]
//! above every operator. Its stream measures a *burst*, the run of batches it
//! returns without a `Pending` in between, and after [`SLICE`] returns `Pending`
//! once (having woken itself), so the task goes to the back of the run queue:
//! deadline and cancel checks, and other queries, get their turn. A stale burst
//! (the task was parked on another input meanwhile) costs one spurious yield.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::Stream;

/// Continuous work after which an operator yields.
pub const SLICE: Duration = Duration::from_millis(2);

/// The optimizer rule: a [`TimeSliceExec`] above every operator.
#[derive(Debug, Default)]
pub struct TimeSlice;

impl PhysicalOptimizerRule for TimeSlice {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if node.is::<TimeSliceExec>() {
                return Ok(Transformed::no(node));
            }
            Ok(Transformed::yes(
                Arc::new(TimeSliceExec::new(node)) as Arc<dyn ExecutionPlan>
            ))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "TimeSlice"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Passes its input through, yielding after [`SLICE`] of continuous output.
#[derive(Debug)]
pub struct TimeSliceExec {
    input: Arc<dyn ExecutionPlan>,
}

impl TimeSliceExec {
    pub fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        Self { input }
    }
}

impl DisplayAs for TimeSliceExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TimeSliceExec")
    }
}

impl ExecutionPlan for TimeSliceExec {
    fn name(&self) -> &str {
        "TimeSliceExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(format!(
                "TimeSliceExec takes one child, got {}",
                children.len()
            )));
        }
        Ok(Arc::new(Self::new(children.swap_remove(0))))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let inner = self.input.execute(partition, context)?;
        Ok(Box::pin(SliceStream {
            inner,
            burst_start: None,
        }))
    }
}

struct SliceStream {
    inner: SendableRecordBatchStream,
    burst_start: Option<Instant>,
}

impl Stream for SliceStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.burst_start {
            Some(start) if start.elapsed() >= SLICE => {
                self.burst_start = None;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Some(_) => {}
            None => self.burst_start = Some(Instant::now()),
        }
        let polled = self.inner.as_mut().poll_next(cx);
        if polled.is_pending() {
            self.burst_start = None;
        }
        polled
    }
}

impl RecordBatchStream for SliceStream {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
}
