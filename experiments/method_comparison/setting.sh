# The comparison's setting for one task, shared by run.sh and run_head_lr.sh (sourced; $task is set):
# 1 epoch over 2,000 training examples; tweets evaluate on 1,000 validation and 1,000 test examples.
# $evaluation alone is the task's evaluation limit (the fair comparison's long budget trains on the whole split).
case $task in
  rotten_tomatoes) evaluation="" ;;
  tweet_sentiment) evaluation="+task.data.limit_eval=1000" ;;
  *) echo "task: rotten_tomatoes or tweet_sentiment" >&2; exit 2 ;;
esac
data="+task.data.limit_train=2000 $evaluation"
common="model=minilm task=$task epochs=1 $data"
export HF_HUB_OFFLINE=1
