# The comparison's setting for one task, shared by run.sh and run_head_lr.sh (sourced; $task is set):
# 1 epoch over 2,000 training examples; tweets evaluate on 1,000 validation and 1,000 test examples.
case $task in
  rotten_tomatoes) data="+task.data.limit_train=2000" ;;
  tweet_sentiment) data="+task.data.limit_train=2000 +task.data.limit_eval=1000" ;;
  *) echo "task: rotten_tomatoes or tweet_sentiment" >&2; exit 2 ;;
esac
common="model=minilm task=$task epochs=1 $data"
export HF_HUB_OFFLINE=1
